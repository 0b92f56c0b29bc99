using Kvq.Cache;
using Kvq.Model;

namespace Kvq.Eval;

/// <summary>
/// Copy recall: BOS, a passage of P book tokens, F tokens of other text from the same book, the passage again. A model
/// that reads far back predicts the second copy almost perfectly (books-19m: ppl ~2 vs ~40 on the first); errors in
/// far-back keys and values show up as a higher second-copy perplexity. Same placements for every filler length and
/// format (paired), deterministic for the seed.
/// </summary>
public sealed class CopyRecallEvaluator(ILanguageModel model, int bos)
{
    /// <param name="progress">Called after each sequence with (sequences done, samples x fillers).</param>
    /// <remarks>Samples are the outer loop: a cancelled run returns rows over the samples done for every filler length
    /// (the last sample possibly for only some fillers), or throws <see cref="OperationCanceledException"/> if none was.</remarks>
    public IReadOnlyList<CopyRecallResult> Evaluate(ReadOnlySpan<int> bookTokens, KvCacheConfig config, int passageTokens,
        IReadOnlyList<int> fillerTokens, int samples, int seed, Action<int, int>? progress = null, CancellationToken cancel = default)
    {
        if (fillerTokens.Count == 0) throw new ArgumentException("no filler lengths given");
        if (samples < 1) throw new ArgumentException($"--samples {samples}: need at least 1");
        int maxFiller = 0;
        foreach (int f in fillerTokens)
        {
            if (f < 0) throw new ArgumentException($"filler of {f} tokens: must be 0 or more");
            maxFiller = Math.Max(maxFiller, f);
        }
        int longest = 1 + 2 * passageTokens + maxFiller;
        if (longest > model.Config.ContextLength)
            throw new ArgumentException($"passage {passageTokens} x 2 + filler {maxFiller} + BOS = {longest} tokens is longer than " +
                                        $"the model's context ({model.Config.ContextLength})");
        var placements = CopyRecallSample.Place(bookTokens.Length, passageTokens, maxFiller, samples, seed);
        int vocab = model.Config.VocabSize;
        var logits = new float[longest * vocab];
        int nf = fillerTokens.Count;
        var first = new double[nf];
        var second = new double[nf];
        var count = new int[nf];
        var seconds = new double[nf];
        var memory = new KvMemory[nf];
        int done = 0;
        for (int s = 0; s < samples && !cancel.IsCancellationRequested; s++)
            for (int f = 0; f < nf && !cancel.IsCancellationRequested; f++)
            {
                var sw = System.Diagnostics.Stopwatch.StartNew();
                int filler = fillerTokens[f];
                var seqTokens = placements[s].Sequence(bookTokens, passageTokens, filler, bos);
                var seq = model.CreateSequence(config, seqTokens.Length);
                using var owner = seq as IDisposable;
                var rows = logits.AsSpan(0, seqTokens.Length * vocab);
                model.Forward(seqTokens, seq, default, rows);
                var (a0, a1) = CopyRecallSample.FirstCopy(passageTokens);
                var (b0, b1) = CopyRecallSample.SecondCopy(passageTokens, filler);
                first[f] += PerplexityWindows.NegativeLogLikelihood(rows, seqTokens, vocab, a0, a1);
                second[f] += PerplexityWindows.NegativeLogLikelihood(rows, seqTokens, vocab, b0, b1);
                memory[f] = seq.ReportMemory();
                count[f]++;
                seconds[f] += sw.Elapsed.TotalSeconds;
                done++;
                progress?.Invoke(done, samples * nf);
            }
        if (done == 0) throw new OperationCanceledException(cancel);
        var results = new List<CopyRecallResult>(nf);
        for (int f = 0; f < nf; f++)
        {
            if (count[f] == 0) continue;
            long n = (long)count[f] * passageTokens;
            results.Add(new CopyRecallResult(config.Name, fillerTokens[f], passageTokens, count[f], Math.Exp(first[f] / n),
                Math.Exp(second[f] / n), n, memory[f].BitsPerElement, memory[f].BytesPerToken, seconds[f]));
        }
        return results;
    }
}
