namespace Kvq.Tests.Calibration.Fisher;

/// <summary>Central finite differences of float64 functions, and the error measures the gradient tests use.</summary>
internal static class GradientCheck
{
    /// <summary>d f / d x[i] by central differences, x restored afterwards.</summary>
    public static double Central(Func<double[], double> f, double[] x, int i, double eps = 1e-6)
    {
        double keep = x[i];
        x[i] = keep + eps;
        double up = f(x);
        x[i] = keep - eps;
        double down = f(x);
        x[i] = keep;
        return (up - down) / (2 * eps);
    }

    /// <summary>The full finite-difference gradient of f at x.</summary>
    public static double[] Gradient(Func<double[], double> f, double[] x, double eps = 1e-6)
    {
        var g = new double[x.Length];
        for (int i = 0; i < x.Length; i++) g[i] = Central(f, x, i, eps);
        return g;
    }

    /// <summary>max |actual - expected| / max |expected|: a normwise relative error that tiny entries cannot inflate.</summary>
    public static double NormwiseError(ReadOnlySpan<float> actual, ReadOnlySpan<double> expected)
    {
        Assert.Equal(expected.Length, actual.Length);
        double maxErr = 0, maxRef = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            maxErr = Math.Max(maxErr, Math.Abs(actual[i] - expected[i]));
            maxRef = Math.Max(maxRef, Math.Abs(expected[i]));
        }
        Assert.True(maxRef > 0, "the reference gradient is all zeros: the check would prove nothing");
        return maxErr / maxRef;
    }

    public static float[] RandomFloats(Random rng, int n, double scale = 1, double offset = 0)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)(offset + scale * (2 * rng.NextDouble() - 1));
        return a;
    }

    public static double[] ToDouble(ReadOnlySpan<float> a)
    {
        var d = new double[a.Length];
        for (int i = 0; i < a.Length; i++) d[i] = a[i];
        return d;
    }
}
