namespace Kvq.Tests;

/// <summary>How far two (positions, vocab) logit matrices are apart.</summary>
public sealed record LogitComparison(int Positions, double Top1Agreement, double MaxAbsError, double MaxRelativeError, double MeanAbsError)
{
    /// <summary>Relative error is |a-b| over the largest |logit| of that position (logits have no natural scale).</summary>
    public static LogitComparison Compare(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, int positions, int vocab)
    {
        int agree = 0;
        double maxAbs = 0, maxRel = 0, sumAbs = 0;
        for (int p = 0; p < positions; p++)
        {
            var e = expected.Slice(p * vocab, vocab);
            var a = actual.Slice(p * vocab, vocab);
            int ae = 0, aa = 0;
            double scale = 0, posMax = 0;
            for (int i = 0; i < vocab; i++)
            {
                if (e[i] > e[ae]) ae = i;
                if (a[i] > a[aa]) aa = i;
                scale = Math.Max(scale, Math.Abs(e[i]));
                double d = Math.Abs(e[i] - a[i]);
                posMax = Math.Max(posMax, d);
                sumAbs += d;
            }
            if (ae == aa) agree++;
            maxAbs = Math.Max(maxAbs, posMax);
            maxRel = Math.Max(maxRel, posMax / Math.Max(scale, 1e-6));
        }
        return new LogitComparison(positions, (double)agree / positions, maxAbs, maxRel, sumAbs / ((double)positions * vocab));
    }

    /// <summary>Per position: the largest |expected - actual| over the position's largest |expected|.</summary>
    public static double[] PositionErrors(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, int positions, int vocab)
    {
        var r = new double[positions];
        for (int p = 0; p < positions; p++)
        {
            double scale = 0, err = 0;
            for (int i = 0; i < vocab; i++)
            {
                scale = Math.Max(scale, Math.Abs(expected[p * vocab + i]));
                err = Math.Max(err, Math.Abs(expected[p * vocab + i] - actual[p * vocab + i]));
            }
            r[p] = err / Math.Max(scale, 1e-6);
        }
        return r;
    }
}
