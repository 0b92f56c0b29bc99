using Kvq.Calibration.Fisher;
using Kvq.Tensors;
using static Kvq.Tests.Calibration.Fisher.GradientCheck;

namespace Kvq.Tests.Calibration.Fisher;

/// <summary>Causal GQA attention: forward against a float64 twin, backward against its finite differences.</summary>
public class CausalAttentionTests
{
    /// <summary>Float64 twin of <see cref="CausalAttention.Forward"/>: returns o (T, heads*hd).</summary>
    internal static double[] Forward64(double[] q, double[] k, double[] v, int tokens, int heads, int kvHeads, int hd, int window = 0,
        double softCap = 0)
    {
        int group = heads / kvHeads, qDim = heads * hd, kvDim = kvHeads * hd;
        double scale = 1 / Math.Sqrt(hd);
        var o = new double[tokens * qDim];
        var s = new double[tokens];
        for (int t = 0; t < tokens; t++)
            for (int h = 0; h < heads; h++)
            {
                int kvOff = h / group * hd;
                double max = double.NegativeInfinity;
                int first = window > 0 ? Math.Max(0, t - window + 1) : 0;   // sliding window: keys first..t
                for (int j = 0; j < first; j++) s[j] = double.NegativeInfinity;
                for (int j = first; j <= t; j++)
                {
                    double d = 0;
                    for (int i = 0; i < hd; i++) d += q[t * qDim + h * hd + i] * k[j * kvDim + kvOff + i];
                    s[j] = softCap > 0 ? softCap * Math.Tanh(d * scale / softCap) : d * scale;
                    max = Math.Max(max, s[j]);
                }
                double sum = 0;
                for (int j = 0; j <= t; j++) sum += s[j] = Math.Exp(s[j] - max);
                for (int j = 0; j <= t; j++)
                    for (int i = 0; i < hd; i++) o[t * qDim + h * hd + i] += s[j] / sum * v[j * kvDim + kvOff + i];
            }
        return o;
    }

    [Theory]
    [InlineData(7, 4, 4, 5)]    // group size 1
    [InlineData(9, 4, 2, 6)]    // group size 2
    [InlineData(6, 4, 1, 3)]    // group size 4 (MQA)
    [InlineData(1, 2, 1, 4)]    // one token: the only key gets probability 1
    public void Backward_matches_finite_differences(int tokens, int heads, int kvHeads, int hd)
    {
        var rng = new Random(tokens * 100 + heads * 10 + kvHeads);
        int qDim = heads * hd, kvDim = kvHeads * hd;
        var q = RandomFloats(rng, tokens * qDim, scale: 2);
        var k = RandomFloats(rng, tokens * kvDim, scale: 2);
        var v = RandomFloats(rng, tokens * kvDim);
        var dO = RandomFloats(rng, tokens * qDim);

        var o = new float[tokens * qDim];
        CausalAttention.Forward(q, k, v, o, tokens, heads, kvHeads, hd, Parallelism.Single);
        var o64 = Forward64(ToDouble(q), ToDouble(k), ToDouble(v), tokens, heads, kvHeads, hd);
        for (int i = 0; i < o.Length; i++) Assert.Equal(o64[i], o[i], 1e-5);

        var dQ = new float[q.Length];
        var dK = new float[k.Length];
        var dV = new float[v.Length];
        CausalAttention.Backward(q, k, v, dO, dQ, dK, dV, tokens, heads, kvHeads, hd, new Parallelism(3));

        double Loss(double[] qq, double[] kk, double[] vv)
        {
            var y = Forward64(qq, kk, vv, tokens, heads, kvHeads, hd);
            double l = 0;
            for (int i = 0; i < y.Length; i++) l += y[i] * dO[i];
            return l;
        }
        var q0 = ToDouble(q);
        var k0 = ToDouble(k);
        var v0 = ToDouble(v);
        Assert.True(NormwiseError(dV, Gradient(vv => Loss(q0, k0, vv), v0)) < 1e-5);
        if (tokens == 1)
        {
            // Softmax over one key is constant: no gradient reaches q or k.
            Assert.All(dQ, x => Assert.Equal(0f, x));
            Assert.All(dK, x => Assert.Equal(0f, x));
            return;
        }
        Assert.True(NormwiseError(dQ, Gradient(qq => Loss(qq, k0, v0), q0)) < 1e-5);
        Assert.True(NormwiseError(dK, Gradient(kk => Loss(q0, kk, v0), k0)) < 1e-5);
    }

    [Fact]
    public void Backward_is_the_same_on_any_number_of_threads()
    {
        var rng = new Random(8);
        int tokens = 33, heads = 6, kvHeads = 2, hd = 8;
        var q = RandomFloats(rng, tokens * heads * hd);
        var k = RandomFloats(rng, tokens * kvHeads * hd);
        var v = RandomFloats(rng, tokens * kvHeads * hd);
        var dO = RandomFloats(rng, tokens * heads * hd);
        float[][] Run(int threads)
        {
            var r = new[] { new float[q.Length], new float[k.Length], new float[v.Length] };
            CausalAttention.Backward(q, k, v, dO, r[0], r[1], r[2], tokens, heads, kvHeads, hd, new Parallelism(threads));
            return r;
        }
        var one = Run(1);
        var four = Run(4);
        for (int i = 0; i < 3; i++) Assert.Equal(one[i], four[i]);
    }

    [Fact]
    public void Rejects_heads_not_a_multiple_of_kv_heads()
    {
        var e = Assert.Throws<ArgumentException>(() =>
            CausalAttention.Forward(new float[30], new float[20], new float[20], new float[30], 2, 3, 2, 5, Parallelism.Single));
        Assert.Contains("3 heads, 2 kv heads", e.Message);
    }
}
