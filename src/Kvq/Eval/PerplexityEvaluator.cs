using Kvq.Cache;
using Kvq.Model;

namespace Kvq.Eval;

/// <summary>Perplexity of a model over windows of a token stream with a given KV cache format (fresh cache per window).</summary>
public sealed class PerplexityEvaluator(Transformer model, int bos)
{
    /// <param name="progress">Called after each window with (windows done, windows total).</param>
    public PerplexityResult Evaluate(ReadOnlySpan<int> textTokens, int ctx, int windows, string kvSpec,
        Action<int, int>? progress = null, CancellationToken cancel = default) =>
        Evaluate(textTokens, ctx, windows, KvCacheConfig.Parse(kvSpec), progress, cancel);

    /// <summary>The same with a full cache config (calibration profile, attention sinks).</summary>
    public PerplexityResult Evaluate(ReadOnlySpan<int> textTokens, int ctx, int windows, KvCacheConfig config,
        Action<int, int>? progress = null, CancellationToken cancel = default)
    {
        if (ctx < 2) throw new ArgumentException($"context {ctx} is too short (need at least 2)");
        int available = PerplexityWindows.Count(textTokens.Length, ctx);
        if (available == 0)
            throw new ArgumentException($"the text has {textTokens.Length} tokens: too short for one window of {ctx}");
        if (windows <= 0 || windows > available) windows = available;
        var cache = new PagedKvCache(model.KvShape, config);
        int vocab = model.Config.VocabSize;
        var logits = new float[ctx * vocab];
        double nll = 0;
        long predicted = 0;
        KvMemory? memory = null;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        int done = 0;
        for (int w = 0; w < windows && !cancel.IsCancellationRequested; w++)
        {
            var win = PerplexityWindows.Window(textTokens, ctx, w, bos);
            using var seq = cache.CreateSequence();
            model.Forward(win, seq, default, logits);
            nll += PerplexityWindows.NegativeLogLikelihood(logits, win, vocab);
            predicted += ctx - 1;
            memory = seq.Memory();
            done++;
            progress?.Invoke(w + 1, windows);
        }
        return new PerplexityResult(config.Name, Math.Exp(nll / predicted), predicted, done, ctx,
            memory!.BitsPerElement, memory.BytesPerToken, sw.Elapsed.TotalSeconds);
    }
}
