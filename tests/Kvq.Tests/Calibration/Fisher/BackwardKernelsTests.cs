using Kvq.Calibration.Fisher;
using Kvq.Tensors;
using static Kvq.Tests.Calibration.Fisher.GradientCheck;

namespace Kvq.Tests.Calibration.Fisher;

/// <summary>Each element-wise backward op against central finite differences of a float64 twin of its forward op.</summary>
public class BackwardKernelsTests
{
    [Theory]
    [InlineData(2)]
    [InlineData(37)]
    [InlineData(513)]
    public void SoftmaxCrossEntropy_matches_finite_differences(int vocab)
    {
        var rng = new Random(vocab);
        var logits = RandomFloats(rng, vocab, scale: 4);
        int target = rng.Next(vocab);
        const float scale = 0.25f;
        var dLogits = new float[vocab];
        double nll = BackwardKernels.SoftmaxCrossEntropy(logits, target, scale, dLogits);

        double Loss(double[] z)
        {
            double max = z.Max(), sum = 0;
            foreach (var v in z) sum += Math.Exp(v - max);
            return scale * (Math.Log(sum) + max - z[target]);
        }
        var x = ToDouble(logits);
        Assert.Equal(Loss(x) / scale, nll, 1e-9);
        Assert.True(NormwiseError(dLogits, Gradient(Loss, x)) < 1e-5);
    }

    [Fact]
    public void SoftmaxCrossEntropy_rejects_a_target_outside_the_row()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => BackwardKernels.SoftmaxCrossEntropy(new float[4], 4, 1, new float[4]));
        Assert.Contains("0..3", e.Message);
    }

    [Theory]
    [InlineData(1, 0.5f)]      // one element: the gradient lives in eps alone
    [InlineData(3, 1e-5f)]
    [InlineData(17, 1e-6f)]
    [InlineData(67, 1e-5f)]
    [InlineData(384, 1e-5f)]
    public void RmsNorm_backward_matches_finite_differences(int n, float eps)
    {
        var rng = new Random(n);
        var x = RandomFloats(rng, n, scale: 2, offset: 0.3);
        var w = RandomFloats(rng, n, scale: 1.5);
        var dy = RandomFloats(rng, n);
        var before = RandomFloats(rng, n);   // the op accumulates: whatever was there must stay
        var dx = (float[])before.Clone();
        BackwardKernels.RmsNormBackwardAdd(x, w, eps, dy, dx);
        for (int i = 0; i < n; i++) dx[i] -= before[i];

        double Loss(double[] v)
        {
            double ss = 0;
            foreach (var a in v) ss += a * a;
            double r = 1 / Math.Sqrt(ss / v.Length + eps), l = 0;
            for (int i = 0; i < v.Length; i++) l += v[i] * r * w[i] * dy[i];
            return l;
        }
        Assert.True(NormwiseError(dx, Gradient(Loss, ToDouble(x))) < 1e-5);
    }

    [Fact]
    public void RmsNorm_forward_twin_is_the_kernel()
    {
        // The backward assumes Kernels.RmsNorm computes x * weight / sqrt(mean(x^2) + eps): check that it does.
        var rng = new Random(3);
        var x = RandomFloats(rng, 71, offset: 0.2);
        var w = RandomFloats(rng, 71);
        var y = new float[71];
        var yRef = new float[71];
        Kernels.RmsNorm(x, w, 1e-5f, y);
        Kernels.RmsNormReference(x, w, 1e-5f, yRef);
        for (int i = 0; i < y.Length; i++) Assert.Equal(yRef[i], y[i], 1e-5f);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(19)]
    [InlineData(172)]
    public void SwiGlu_backward_matches_finite_differences(int n)
    {
        var rng = new Random(n);
        var gate = RandomFloats(rng, n, scale: 6);
        var up = RandomFloats(rng, n, scale: 2);
        var dh = RandomFloats(rng, n);
        var dGate = new float[n];
        var dUp = new float[n];
        BackwardKernels.SwiGluBackward(gate, up, dh, dGate, dUp);

        // Forward twin, checked against the kernel first.
        var h = (float[])gate.Clone();
        Kernels.SwiGlu(h, up);
        for (int i = 0; i < n; i++) Assert.Equal(gate[i] / (1 + Math.Exp(-gate[i])) * up[i], h[i], 1e-5);

        double Loss(double[] g, double[] u)
        {
            double l = 0;
            for (int i = 0; i < n; i++) l += g[i] / (1 + Math.Exp(-g[i])) * u[i] * dh[i];
            return l;
        }
        var g0 = ToDouble(gate);
        var u0 = ToDouble(up);
        Assert.True(NormwiseError(dGate, Gradient(g => Loss(g, u0), g0)) < 1e-5);
        Assert.True(NormwiseError(dUp, Gradient(u => Loss(g0, u), u0)) < 1e-5);
    }

    [Theory]
    [InlineData(RopeStyle.Normal, 8, 8, 3)]
    [InlineData(RopeStyle.Neox, 8, 8, 3)]
    [InlineData(RopeStyle.Normal, 10, 6, 2)]   // partial rotary: the last 4 dims pass through
    [InlineData(RopeStyle.Neox, 10, 6, 2)]
    [InlineData(RopeStyle.Normal, 64, 64, 1)]
    [InlineData(RopeStyle.Neox, 64, 64, 5)]
    public void Rope_transpose_matches_finite_differences_and_is_the_adjoint(RopeStyle style, int headDim, int ropeDims, int heads)
    {
        var rope = new Rope(headDim, ropeDims, 10000f, 1f, style);
        var rng = new Random(headDim * 31 + ropeDims + (int)style);
        int n = heads * headDim;
        foreach (long pos in new long[] { 0, 1, 37, 1999 })
        {
            var x = RandomFloats(rng, n);
            var dy = RandomFloats(rng, n);
            var dx = (float[])dy.Clone();
            BackwardKernels.RotateHeadsTransposed(rope, dx, heads, pos);

            // Forward twin in double with the rope's own (float) angles.
            var cos = new float[ropeDims / 2];
            var sin = new float[ropeDims / 2];
            rope.Angles(pos, cos, sin);
            double Loss(double[] v)
            {
                var y = (double[])v.Clone();
                int half = ropeDims / 2;
                for (int h = 0; h < heads; h++)
                    for (int i = 0; i < half; i++)
                    {
                        int a = h * headDim + (style == RopeStyle.Normal ? 2 * i : i);
                        int b = h * headDim + (style == RopeStyle.Normal ? 2 * i + 1 : i + half);
                        y[a] = v[a] * cos[i] - v[b] * sin[i];
                        y[b] = v[a] * sin[i] + v[b] * cos[i];
                    }
                double l = 0;
                for (int i = 0; i < n; i++) l += y[i] * dy[i];
                return l;
            }
            Assert.True(NormwiseError(dx, Gradient(Loss, ToDouble(x))) < 1e-5);

            // <R x, dy> = <x, R^T dy> with the forward kernel itself.
            var rx = (float[])x.Clone();
            rope.RotateHeads(rx, heads, pos);
            double lhs = 0, rhs = 0;
            for (int i = 0; i < n; i++)
            {
                lhs += (double)rx[i] * dy[i];
                rhs += (double)x[i] * dx[i];
            }
            Assert.Equal(lhs, rhs, 1e-4);
            // Pass-through dims keep their gradient.
            for (int h = 0; h < heads; h++)
                for (int i = ropeDims; i < headDim; i++) Assert.Equal(dy[h * headDim + i], dx[h * headDim + i]);
        }
    }
}
