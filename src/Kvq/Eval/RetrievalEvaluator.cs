using Kvq.Cache;
using Kvq.Generation;
using Kvq.Model;
using Kvq.Sampling;
using Kvq.Tokenizers;

namespace Kvq.Eval;

/// <summary>
/// Runs retrieval prompts (passkey, needle) through a cache format: prefill, greedy-decode the task's few tokens, score
/// exact match. Build the prompts once with <see cref="BuildPrompts"/> and reuse them for every format (paired trials).
/// </summary>
public sealed class RetrievalEvaluator(ILanguageModel model, ITokenizer tokenizer)
{
    /// <summary>Prompts for trials x lengths x depths, trial the outer loop (so a cancelled run has whole trials first).</summary>
    public static IReadOnlyList<RetrievalPrompt> BuildPrompts(IRetrievalTask task, IReadOnlyList<int> lengths,
        IReadOnlyList<double> depths, int trials, int seed, int maxContext)
    {
        if (lengths.Count == 0 || depths.Count == 0) throw new ArgumentException($"{task.Name}: no lengths or no depths given");
        if (trials < 1) throw new ArgumentException($"{task.Name}: --trials {trials}: need at least 1");
        foreach (int l in lengths)
            if (l + task.MaxNewTokens > maxContext)
                throw new ArgumentException($"{task.Name}: length {l} + {task.MaxNewTokens} answer tokens is longer than the model's context ({maxContext})");
        var prompts = new List<RetrievalPrompt>(trials * lengths.Count * depths.Count);
        for (int t = 0; t < trials; t++)
            foreach (int l in lengths)
                foreach (double d in depths)
                    prompts.Add(task.Build(l, d, t, seed));
        return prompts;
    }

    /// <param name="progress">Called after each prompt with (prompts done, prompts total).</param>
    /// <remarks>Stops between prompts when <paramref name="cancel"/> fires and returns the trials done (possibly none).</remarks>
    public IReadOnlyList<RetrievalTrial> Evaluate(IRetrievalTask task, IReadOnlyList<RetrievalPrompt> prompts, KvCacheConfig config,
        Action<int, int>? progress = null, CancellationToken cancel = default)
    {
        var generator = new Generator(model, tokenizer);
        var options = new GenerationOptions { MaxTokens = task.MaxNewTokens, Sampler = SamplerOptions.Greedy };
        var trials = new List<RetrievalTrial>(prompts.Count);
        for (int i = 0; i < prompts.Count && !cancel.IsCancellationRequested; i++)
        {
            var p = prompts[i];
            var sw = System.Diagnostics.Stopwatch.StartNew();
            var seq = model.CreateSequence(config, p.Tokens.Length + task.MaxNewTokens);
            using var owner = seq as IDisposable;
            var result = generator.Generate(p.Tokens, options, seq, cancel: CancellationToken.None); // a trial runs to its end; cancel stops between trials
            var memory = seq.ReportMemory();
            trials.Add(new RetrievalTrial(config.Name, task.Name, p.Length, p.Depth, p.Trial, p.Tokens.Length, p.NeedleDepth,
                p.Answer, result.Text, task.IsCorrect(result.Text, p.Answer), task.PrefixMatch(result.Text, p.Answer), memory.BitsPerElement, memory.BytesPerToken,
                sw.Elapsed.TotalSeconds));
            progress?.Invoke(i + 1, prompts.Count);
        }
        return trials;
    }

    /// <summary>Exact-match rate per (length, depth), sorted by length then depth; bits and bytes are means over the trials.</summary>
    public static IReadOnlyList<RetrievalCell> Summarize(IReadOnlyList<RetrievalTrial> trials)
    {
        var cells = new List<RetrievalCell>();
        var index = new Dictionary<(int, double), List<RetrievalTrial>>();
        foreach (var t in trials)
        {
            if (!index.TryGetValue((t.Length, t.Depth), out var list)) index[(t.Length, t.Depth)] = list = [];
            list.Add(t);
        }
        foreach (var (key, list) in index)
        {
            int correct = 0;
            double prefix = 0, tokens = 0, depth = 0, bits = 0, bytes = 0, seconds = 0;
            foreach (var t in list)
            {
                if (t.Correct) correct++;
                prefix += t.PrefixMatch;
                tokens += t.PromptTokens;
                depth += t.NeedleDepth;
                bits += t.BitsPerElement;
                bytes += t.KvBytesPerToken;
                seconds += t.Seconds;
            }
            int n = list.Count;
            cells.Add(new RetrievalCell(list[0].Kv, list[0].Task, key.Item1, key.Item2, n, correct, correct / (double)n,
                prefix / n, tokens / n, depth / n, bits / n, bytes / n, seconds));
        }
        cells.Sort((a, b) => a.Length != b.Length ? a.Length.CompareTo(b.Length) : a.Depth.CompareTo(b.Depth));
        return cells;
    }
}
