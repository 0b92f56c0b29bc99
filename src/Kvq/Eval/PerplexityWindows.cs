namespace Kvq.Eval;

/// <summary>
/// Evaluation windows over a token stream, each BOS followed by ctx-1 text tokens.
/// Non-overlapping: window w holds text tokens [w(ctx-1), (w+1)(ctx-1)); every text token in it is predicted from the
/// tokens before it in the same window (ctx-1 predictions per window).
/// Strided (sliding): window w holds text tokens [w*stride, w*stride + ctx-1) and only its last <c>stride</c> tokens are
/// scored, so every scored token sees at least ctx-1-stride text tokens before it (the first ctx-1-stride text tokens of
/// the stream are context only).
/// </summary>
public static class PerplexityWindows
{
    public static int Count(int textTokens, int ctx) => textTokens / (ctx - 1);

    public static int[] Window(ReadOnlySpan<int> textTokens, int ctx, int w, int bos)
    {
        var win = new int[ctx];
        win[0] = bos;
        textTokens.Slice(w * (ctx - 1), ctx - 1).CopyTo(win.AsSpan(1));
        return win;
    }

    /// <summary>Strided windows that fit in <paramref name="textTokens"/> (0 if the text is shorter than ctx-1 tokens).</summary>
    /// <summary>
    /// Perplexity of any engine over the first <paramref name="windows"/> non-overlapping windows: <paramref name="allLogits"/>
    /// runs one window on a fresh cache and returns its (ctx, vocab) logits. Used to evaluate a peer (llama.cpp) on
    /// exactly the windows <see cref="PerplexityEvaluator"/> uses.
    /// </summary>
    public static double Perplexity(Func<int[], float[]> allLogits, ReadOnlySpan<int> textTokens, int ctx, int windows, int bos, int vocab)
    {
        double nll = 0;
        for (int w = 0; w < windows; w++)
        {
            var win = Window(textTokens, ctx, w, bos);
            nll += NegativeLogLikelihood(allLogits(win), win, vocab);
        }
        return Math.Exp(nll / ((double)windows * (ctx - 1)));
    }

    public static int StridedCount(int textTokens, int ctx, int stride)
    {
        CheckStride(ctx, stride);
        return textTokens < ctx - 1 ? 0 : (textTokens - (ctx - 1)) / stride + 1;
    }

    public static int[] StridedWindow(ReadOnlySpan<int> textTokens, int ctx, int stride, int w, int bos)
    {
        CheckStride(ctx, stride);
        var win = new int[ctx];
        win[0] = bos;
        textTokens.Slice(w * stride, ctx - 1).CopyTo(win.AsSpan(1));
        return win;
    }

    public static void CheckStride(int ctx, int stride)
    {
        if (stride < 1 || stride > ctx - 1)
            throw new ArgumentException($"--stride {stride} must be between 1 and ctx-1 ({ctx - 1})");
    }

    /// <summary>Sum of -log p(window[i+1] | window[..i]) from (ctx, vocab) logits, in nats, in double precision.</summary>
    public static double NegativeLogLikelihood(ReadOnlySpan<float> logits, ReadOnlySpan<int> window, int vocab) =>
        NegativeLogLikelihood(logits, window, vocab, 1, window.Length);

    /// <summary>Sum of -log p(window[t] | window[..t]) for target positions t in [<paramref name="firstTarget"/>,
    /// <paramref name="endTarget"/>), from the logits of row t-1.</summary>
    public static double NegativeLogLikelihood(ReadOnlySpan<float> logits, ReadOnlySpan<int> window, int vocab,
        int firstTarget, int endTarget) => NllSums(logits, window, vocab, firstTarget, endTarget).Sum;

    /// <summary>The sum of the per-token negative log-likelihoods over targets [<paramref name="firstTarget"/>,
    /// <paramref name="endTarget"/>) and the sum of their squares (for the standard error of the mean).</summary>
    public static NllSums NllSums(ReadOnlySpan<float> logits, ReadOnlySpan<int> window, int vocab, int firstTarget, int endTarget)
    {
        if (firstTarget < 1 || endTarget > window.Length || firstTarget > endTarget)
            throw new ArgumentOutOfRangeException(nameof(firstTarget), $"targets [{firstTarget}, {endTarget}) outside 1..{window.Length}");
        double nll = 0, squares = 0;
        for (int t = firstTarget; t < endTarget; t++)
        {
            var row = logits.Slice((t - 1) * vocab, vocab);
            double x = LogSumExp(row) - row[window[t]];
            nll += x;
            squares += x * x;
        }
        return new NllSums(nll, squares, endTarget - firstTarget);
    }

    /// <summary>log(sum(exp(row))) in double precision, shifted by the row's max.</summary>
    public static double LogSumExp(ReadOnlySpan<float> row)
    {
        float max = float.NegativeInfinity;
        foreach (var x in row) max = Math.Max(max, x);
        double sum = 0;
        foreach (var x in row) sum += Math.Exp(x - max);
        return Math.Log(sum) + max;
    }
}

/// <summary>Running sums of per-token negative log-likelihoods (nats): enough for perplexity and its standard error.</summary>
public readonly record struct NllSums(double Sum, double SumOfSquares, long Count)
{
    public static NllSums operator +(NllSums a, NllSums b) => new(a.Sum + b.Sum, a.SumOfSquares + b.SumOfSquares, a.Count + b.Count);

    public double Mean => Count == 0 ? double.NaN : Sum / Count;
    public double Perplexity => Math.Exp(Mean);

    /// <summary>The standard error of the perplexity as llama-perplexity prints it (PPL = x +/- y): the standard error of
    /// the mean NLL, sqrt((E[x^2] - E[x]^2) / (n - 1)), propagated through exp (times the perplexity). 0 with one token.</summary>
    public double PerplexityError
    {
        get
        {
            if (Count < 2) return 0;
            double mean = Mean, variance = SumOfSquares / Count - mean * mean;
            return variance > 0 ? Math.Sqrt(variance / (Count - 1)) * Perplexity : 0;
        }
    }
}
