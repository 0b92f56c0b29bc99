using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Model;

namespace Kvq.Eval;

/// <summary>Perplexity of a model over windows of a token stream with a given KV cache format (a fresh sequence from
/// the model per window, so a GPU model gets device sequences).</summary>
public sealed class PerplexityEvaluator(ILanguageModel model, int bos)
{
    /// <param name="progress">Called after each window with (windows done, windows total).</param>
    public PerplexityResult Evaluate(ReadOnlySpan<int> textTokens, int ctx, int windows, string kvSpec,
        Action<int, int>? progress = null, CancellationToken cancel = default) =>
        Evaluate(textTokens, ctx, windows, KvCacheConfig.Parse(kvSpec), stride: 0, progress, cancel);

    /// <summary>Non-overlapping windows with a full cache config (calibration profile, attention sinks).</summary>
    public PerplexityResult Evaluate(ReadOnlySpan<int> textTokens, int ctx, int windows, KvCacheConfig config,
        Action<int, int>? progress = null, CancellationToken cancel = default) =>
        Evaluate(textTokens, ctx, windows, config, stride: 0, progress, cancel);

    /// <param name="stride">0: non-overlapping windows, every position scored. S &gt; 0: windows advance by S tokens and
    /// only their last S positions are scored (see <see cref="PerplexityWindows"/>).</param>
    /// <param name="windows">Windows to evaluate; 0 or more than the text holds = all.</param>
    /// <remarks>Stops between windows when <paramref name="cancel"/> fires; the result covers the windows done
    /// (<see cref="PerplexityResult.Windows"/>), or throws <see cref="OperationCanceledException"/> if none was.</remarks>
    public PerplexityResult Evaluate(ReadOnlySpan<int> textTokens, int ctx, int windows, KvCacheConfig config, int stride,
        Action<int, int>? progress = null, CancellationToken cancel = default)
    {
        if (ctx < 2) throw new ArgumentException($"context {ctx} is too short (need at least 2)");
        int available = stride == 0 ? PerplexityWindows.Count(textTokens.Length, ctx)
            : PerplexityWindows.StridedCount(textTokens.Length, ctx, stride);
        if (available == 0)
            throw new ArgumentException($"the text has {textTokens.Length} tokens: too short for one window of {ctx}");
        if (windows <= 0 || windows > available) windows = available;
        int vocab = model.Config.VocabSize;
        var logits = new float[ctx * vocab];
        var nll = new NllSums();
        KvMemory? memory = null;
        KvOutlierCounts keyOutliers = default, valueOutliers = default;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        int done = 0;
        for (int w = 0; w < windows && !cancel.IsCancellationRequested; w++)
        {
            var win = stride == 0 ? PerplexityWindows.Window(textTokens, ctx, w, bos)
                : PerplexityWindows.StridedWindow(textTokens, ctx, stride, w, bos);
            var seq = model.CreateSequence(config, ctx);
            using var owner = seq as IDisposable;
            model.Forward(win, seq, default, logits);
            int first = stride == 0 ? 1 : ctx - stride;
            nll += PerplexityWindows.NllSums(logits, win, vocab, first, ctx);
            memory = seq.ReportMemory();
            if (seq is IKvOutlierReport counted)
            {
                keyOutliers += counted.KeyOutliers;
                valueOutliers += counted.ValueOutliers;
            }
            done++;
            progress?.Invoke(w + 1, windows);
        }
        if (done == 0) throw new OperationCanceledException(cancel);
        return new PerplexityResult(config.Name, nll.Perplexity, nll.Count, done, ctx,
            memory!.BitsPerElement, memory.BytesPerToken, sw.Elapsed.TotalSeconds, stride)
        { PplError = nll.PerplexityError, KeyOutliers = keyOutliers, ValueOutliers = valueOutliers };
    }
}
