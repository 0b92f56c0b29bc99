namespace Kvq.Bench.Serving;

/// <summary>One request of a load test: its prompt and how many tokens it generates.</summary>
public sealed record ServeRequest(int[] Prompt, int OutputTokens);

/// <summary>What a serving load test sends: how many requests, how long, how much shared, and how they arrive.</summary>
public sealed record ServeWorkload
{
    public int Requests { get; init; } = 32;
    public int PromptTokens { get; init; } = 2000;
    public int OutputTokens { get; init; } = 200;
    /// <summary>Lengths spread uniformly over [L(1-s), L(1+s)] (seeded); 0: every request the same.</summary>
    public double LengthSpread { get; init; }
    /// <summary>Share of each prompt that is the same leading text in every request (a system prompt, a document).</summary>
    public double SharedPrefix { get; init; }
    /// <summary>Closed loop: this many clients, each sending its next request when the previous one finishes.</summary>
    public int Concurrency { get; init; } = 32;
    /// <summary>Open loop instead: Poisson arrivals at this many requests per second (Concurrency is then ignored).</summary>
    public double? ArrivalRate { get; init; }
    public int Seed { get; init; } = 1;

    /// <summary>
    /// The requests, cut from <paramref name="text"/> (token ids of real text, no BOS): request i's prompt is
    /// <paramref name="bos"/> (if >= 0), then the shared prefix (the text's start), then text from its own offset.
    /// The same workload gives the same requests to every engine.
    /// </summary>
    public IReadOnlyList<ServeRequest> Build(ReadOnlySpan<int> text, int bos)
    {
        var rng = new Random(Seed);
        int Spread(int n) => LengthSpread <= 0 ? n : Math.Max(1, (int)Math.Round(n * (1 + LengthSpread * (2 * rng.NextDouble() - 1))));
        int shared = (int)(PromptTokens * Math.Clamp(SharedPrefix, 0, 1));
        var list = new List<ServeRequest>(Requests);
        int head = bos >= 0 ? 1 : 0;
        for (int i = 0; i < Requests; i++)
        {
            int length = Math.Max(shared + head + 1, Spread(PromptTokens));
            int own = length - shared - head;
            if (shared + own > text.Length)
                throw new ArgumentException($"the text has {text.Length} tokens; a prompt of {length} needs more");
            var prompt = new int[length];
            if (head == 1) prompt[0] = bos;
            text[..shared].CopyTo(prompt.AsSpan(head));
            // Spread the requests' own parts over the text so they differ from their first token.
            int start = shared + (int)((long)(text.Length - shared - own) * i / Math.Max(1, Requests));
            text.Slice(start, own).CopyTo(prompt.AsSpan(head + shared));
            list.Add(new ServeRequest(prompt, Spread(OutputTokens)));
        }
        return list;
    }

    public string Describe() =>
        $"{Requests} requests, prompts {PromptTokens} tokens{(LengthSpread > 0 ? $" +/-{LengthSpread:P0}" : "")}" +
        $"{(SharedPrefix > 0 ? $" ({SharedPrefix:P0} shared prefix)" : "")}, {OutputTokens} output tokens, " +
        (ArrivalRate is { } rate ? $"Poisson arrivals at {rate} req/s" : $"{Concurrency} concurrent clients (closed loop)");
}
