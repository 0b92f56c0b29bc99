using Kvq.Cache;
using Kvq.Model;

namespace Kvq.Eval;

/// <summary>
/// KL divergence (mean and tail percentiles) and top-1 agreement of next-token distributions: each cache format
/// against a reference format (f16 by default: the cache llama.cpp and the tables compare to) on the same non-overlapping windows (<see cref="PerplexityWindows"/>), every position scored. Windows are the outer
/// loop, so the reference runs once per window for all formats and a cancelled run has the same windows for each.
/// </summary>
/// <param name="referenceModel">The model of the reference run (default: <paramref name="model"/>), e.g. the unquantized
/// weights when <paramref name="model"/> has llama.cpp-quantized ones: KL then measures weights and cache together.
/// It must share the vocabulary.</param>
public sealed class KlEvaluator(ILanguageModel model, int bos, ILanguageModel? referenceModel = null)
{
    /// <summary>The reference cache when none is given.</summary>
    public const string DefaultReference = "f16";

    /// <summary>The p-quantile of ascending values by linear interpolation between closest ranks (numpy's default):
    /// position p (n - 1).</summary>
    public static double Percentile(ReadOnlySpan<double> sorted, double p)
    {
        if (sorted.IsEmpty) throw new ArgumentException("no values");
        double pos = p * (sorted.Length - 1);
        int lo = (int)Math.Floor(pos);
        int hi = Math.Min(lo + 1, sorted.Length - 1);
        return sorted[lo] + (pos - lo) * (sorted[hi] - sorted[lo]);
    }

    /// <param name="progress">Called after each (window, format) run with (runs done, runs total).</param>
    /// <remarks>Stops between windows when <paramref name="cancel"/> fires; rows cover the windows done, or
    /// <see cref="OperationCanceledException"/> is thrown if none was.</remarks>
    public IReadOnlyList<KlResult> Evaluate(ReadOnlySpan<int> textTokens, int ctx, int windows,
        IReadOnlyList<KvCacheConfig> configs, KvCacheConfig? reference = null, Action<int, int>? progress = null,
        CancellationToken cancel = default)
    {
        if (ctx < 2) throw new ArgumentException($"context {ctx} is too short (need at least 2)");
        int available = PerplexityWindows.Count(textTokens.Length, ctx);
        if (available == 0)
            throw new ArgumentException($"the text has {textTokens.Length} tokens: too short for one window of {ctx}");
        if (windows <= 0 || windows > available) windows = available;
        reference ??= KvCacheConfig.Parse(DefaultReference);
        var refModel = referenceModel ?? model;
        int vocab = model.Config.VocabSize;
        if (refModel.Config.VocabSize != vocab)
            throw new ArgumentException($"the reference model's vocabulary ({refModel.Config.VocabSize}) differs from the model's ({vocab})");
        var refLogits = new float[ctx * vocab];
        var logits = new float[ctx * vocab];
        var kl = new double[configs.Count];
        var perToken = new double[configs.Count][]; // every scored position's KL, for the tail percentiles
        for (int c = 0; c < perToken.Length; c++) perToken[c] = new double[(long)windows * (ctx - 1)];
        var nll = new double[configs.Count];
        var agree = new long[configs.Count];
        var seconds = new double[configs.Count];
        var memory = new KvMemory[configs.Count];
        double refNll = 0;
        int done = 0, runs = windows * (configs.Count + 1);
        for (int w = 0; w < windows && !cancel.IsCancellationRequested; w++)
        {
            var win = PerplexityWindows.Window(textTokens, ctx, w, bos);
            var refSeq = refModel.CreateSequence(reference, ctx);
            using (refSeq as IDisposable) refModel.Forward(win, refSeq, default, refLogits);
            refNll += PerplexityWindows.NegativeLogLikelihood(refLogits, win, vocab);
            progress?.Invoke(w * (configs.Count + 1) + 1, runs);
            for (int c = 0; c < configs.Count; c++)
            {
                var sw = System.Diagnostics.Stopwatch.StartNew();
                var seq = model.CreateSequence(configs[c], ctx);
                using var owner = seq as IDisposable;
                model.Forward(win, seq, default, logits);
                memory[c] = seq.ReportMemory();
                nll[c] += PerplexityWindows.NegativeLogLikelihood(logits, win, vocab);
                for (int t = 0; t + 1 < ctx; t++)
                {
                    var p = refLogits.AsSpan(t * vocab, vocab);
                    var q = logits.AsSpan(t * vocab, vocab);
                    double d = NextTokenDivergence.KlDivergence(p, q);
                    kl[c] += d;
                    perToken[c][(long)w * (ctx - 1) + t] = d;
                    if (NextTokenDivergence.Argmax(p) == NextTokenDivergence.Argmax(q)) agree[c]++;
                }
                seconds[c] += sw.Elapsed.TotalSeconds;
                progress?.Invoke(w * (configs.Count + 1) + c + 2, runs);
            }
            done++;
        }
        if (done == 0) throw new OperationCanceledException(cancel);
        long n = (long)done * (ctx - 1);
        var rows = new KlResult[configs.Count];
        for (int c = 0; c < rows.Length; c++)
        {
            var sorted = perToken[c].AsSpan(0, (int)n);
            sorted.Sort();
            rows[c] = new KlResult(configs[c].Name, reference.Name, kl[c] / n, agree[c] / (double)n, Math.Exp(nll[c] / n),
                Math.Exp(refNll / n), n, done, ctx, memory[c].BitsPerElement, memory[c].BytesPerToken, seconds[c],
                Percentile(sorted, 0.99), Percentile(sorted, 0.999), sorted[^1]);
        }
        return rows;
    }
}
