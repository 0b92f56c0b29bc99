namespace Kvq.Sampling;

/// <summary>
/// Picks the next token from logits, in llama.cpp's order: repetition penalty, top-k, top-p, min-p, temperature,
/// then a seeded draw. Deterministic for a seed. OpenAI's presence and frequency penalties come first, over the
/// generated tokens only (the history after <c>promptLength</c>).
/// </summary>
public sealed class Sampler
{
    private readonly SamplerOptions _o;
    private readonly Random _rng;
    private (int Id, float Logit)[] _cand = [];
    private double[] _p = [];

    public SamplerOptions Options => _o;

    public Sampler(SamplerOptions options)
    {
        _o = options;
        _rng = new Random(unchecked((int)(options.Seed ^ (options.Seed >> 32))));
    }

    /// <param name="history">The tokens so far (prompt, then generated), for the penalties.</param>
    /// <param name="promptLength">How many of <paramref name="history"/> are prompt tokens: the presence and frequency
    /// penalties count only the tokens after them.</param>
    public int Sample(ReadOnlySpan<float> logits, ReadOnlySpan<int> history, int promptLength = 0)
    {
        int n = Candidates(logits, history, promptLength);
        if (_o.Temperature <= 0) return _cand[0].Id;
        double r = _rng.NextDouble(), acc = 0;
        for (int i = 0; i < n; i++)
        {
            acc += _p[i];
            if (r < acc) return _cand[i].Id;
        }
        return _cand[n - 1].Id;
    }

    /// <summary>The distribution a draw picks from (what <see cref="Sample"/> draws from, without drawing): token ids
    /// and their probabilities, most likely first; greedy gives the argmax alone with probability 1.</summary>
    internal (int Id, double P)[] Distribution(ReadOnlySpan<float> logits, ReadOnlySpan<int> history, int promptLength = 0)
    {
        int n = Candidates(logits, history, promptLength);
        var d = new (int Id, double P)[n];
        for (int i = 0; i < n; i++) d[i] = (_cand[i].Id, _p[i]);
        return d;
    }

    /// <summary>Fills the first n candidates (<see cref="_cand"/>) and their final probabilities (<see cref="_p"/>) in
    /// llama.cpp's order and returns n.</summary>
    private int Candidates(ReadOnlySpan<float> logits, ReadOnlySpan<int> history, int promptLength)
    {
        int vocab = logits.Length;
        if (_cand.Length < vocab) _cand = new (int, float)[vocab];
        if (_p.Length < vocab) _p = new double[vocab];
        var cand = _cand.AsSpan(0, vocab);
        for (int i = 0; i < vocab; i++) cand[i] = (i, logits[i]);
        ApplyPresenceAndFrequency(cand, history[Math.Clamp(promptLength, 0, history.Length)..]);
        ApplyRepetitionPenalty(cand, history);
        if (_o.Temperature <= 0)
        {
            cand[0] = cand[Argmax(cand)];
            _p[0] = 1;
            return 1;
        }

        int n = vocab;
        // Sort descending by logit (only the kept prefix matters afterwards).
        cand.Sort(static (a, b) => b.Logit.CompareTo(a.Logit));
        if (_o.TopK > 0) n = Math.Min(n, _o.TopK);
        var p = _p.AsSpan(0, n);
        Softmax(cand[..n], p, 1f);
        if (_o.TopP < 1f)
        {
            double cum = 0;
            int keep = n;
            for (int i = 0; i < n; i++)
            {
                cum += p[i];
                if (cum >= _o.TopP) { keep = i + 1; break; }
            }
            n = keep;
        }
        if (_o.MinP > 0f)
        {
            double threshold = p[0] * _o.MinP;
            int keep = 1;
            while (keep < n && p[keep] >= threshold) keep++;
            n = keep;
        }
        Softmax(cand[..n], p, _o.Temperature);
        return n;
    }

    /// <summary>OpenAI's penalties: logit -= count * frequency + (count > 0) * presence, counts over <paramref name="generated"/>.</summary>
    private void ApplyPresenceAndFrequency(Span<(int Id, float Logit)> cand, ReadOnlySpan<int> generated)
    {
        if ((_o.PresencePenalty == 0f && _o.FrequencyPenalty == 0f) || generated.IsEmpty) return;
        var counts = new Dictionary<int, int>();
        foreach (var id in generated)
            if ((uint)id < (uint)cand.Length) counts[id] = counts.GetValueOrDefault(id) + 1;
        foreach (var (id, count) in counts) cand[id].Logit -= count * _o.FrequencyPenalty + _o.PresencePenalty;
    }

    private void ApplyRepetitionPenalty(Span<(int Id, float Logit)> cand, ReadOnlySpan<int> history)
    {
        if (_o.RepetitionPenalty == 1f || history.IsEmpty) return;
        var window = history[Math.Max(0, history.Length - _o.RepetitionWindow)..];
        var seen = new HashSet<int>();
        foreach (var id in window)
        {
            if ((uint)id >= (uint)cand.Length || !seen.Add(id)) continue;
            ref var c = ref cand[id];
            c.Logit = c.Logit > 0 ? c.Logit / _o.RepetitionPenalty : c.Logit * _o.RepetitionPenalty;
        }
    }

    private static int Argmax(ReadOnlySpan<(int Id, float Logit)> cand)
    {
        int best = 0;
        for (int i = 1; i < cand.Length; i++)
            if (cand[i].Logit > cand[best].Logit) best = i;
        return best;
    }

    private static void Softmax(ReadOnlySpan<(int Id, float Logit)> cand, Span<double> p, float temperature)
    {
        double max = double.NegativeInfinity;
        foreach (var c in cand) max = Math.Max(max, c.Logit);
        double sum = 0;
        for (int i = 0; i < cand.Length; i++)
        {
            p[i] = Math.Exp((cand[i].Logit - max) / temperature);
            sum += p[i];
        }
        for (int i = 0; i < cand.Length; i++) p[i] /= sum;
    }
}
