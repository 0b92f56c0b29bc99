namespace Kvq.Eval;

/// <summary>
/// Non-overlapping evaluation windows: window w is BOS followed by text tokens [w(ctx-1), (w+1)(ctx-1)); every text
/// token in it is predicted from the tokens before it in the same window (ctx-1 predictions per window).
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

    /// <summary>Sum of -log p(window[i+1] | window[..i]) from (ctx, vocab) logits, in nats, in double precision.</summary>
    public static double NegativeLogLikelihood(ReadOnlySpan<float> logits, ReadOnlySpan<int> window, int vocab)
    {
        double nll = 0;
        for (int i = 0; i + 1 < window.Length; i++)
        {
            var row = logits.Slice(i * vocab, vocab);
            float max = float.NegativeInfinity;
            foreach (var x in row) max = Math.Max(max, x);
            double sum = 0;
            foreach (var x in row) sum += Math.Exp(x - max);
            nll += Math.Log(sum) + max - row[window[i + 1]];
        }
        return nll;
    }
}
