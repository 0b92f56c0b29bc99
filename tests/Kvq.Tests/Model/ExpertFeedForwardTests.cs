using Kvq.Model.Experts;
using Kvq.Tensors;

namespace Kvq.Tests.Model;

/// <summary>The mixture-of-experts operator against a plain per-token reference in double precision (route, run the
/// chosen experts one at a time, weight and add), on random weights, odd batch sizes, with and without a shared expert.</summary>
public class ExpertFeedForwardTests
{
    private const int Dim = 64, Ffn = 32, SharedFfn = 96;

    [Theory]
    [InlineData(6, 2, true, false)]
    [InlineData(6, 2, false, true)]
    [InlineData(8, 3, true, true)]
    [InlineData(4, 1, false, false)]
    public void MatchesPerTokenReference(int experts, int used, bool normalize, bool shared)
    {
        var rng = new Random(31 + experts * 10 + used);
        var config = new ExpertConfig(experts, used, Ffn, normalize, shared ? SharedFfn : 0);
        var w = RandomWeights(config, rng);
        foreach (int n in new[] { 1, 7, 13 })
        {
            var x = Tensors.QuantTestData.RandomGaussian(n * Dim, rng);
            foreach (bool vectorRows in new[] { true, false })
            {
                var ffn = new ExpertFeedForward(config, Dim, 16);
                var y = new float[n * Dim];
                ffn.Forward(w, x, y, 0, n, vectorRows, new Parallelism(2));
                Assert.True(ffn.ExpertsRun <= experts);
                for (int t = 0; t < n; t++)
                {
                    var expect = Reference(config, w, x.AsSpan(t * Dim, Dim));
                    double scale = expect.Max(Math.Abs);
                    for (int i = 0; i < Dim; i++)
                        Assert.True(Math.Abs(y[t * Dim + i] - expect[i]) <= 1e-4 * scale,
                            $"n {n} token {t} value {i}: {y[t * Dim + i]} vs {expect[i]} (vectorRows {vectorRows})");
                }
            }
        }
    }

    [Fact]
    public void RowsInTheMiddleOfABufferAreTheirOwn()
    {
        var rng = new Random(5);
        var config = new ExpertConfig(4, 2, Ffn, true);
        var w = RandomWeights(config, rng);
        var x = Tensors.QuantTestData.RandomGaussian(9 * Dim, rng);
        var whole = new float[9 * Dim];
        var ffn = new ExpertFeedForward(config, Dim, 16);
        ffn.Forward(w, x, whole, 0, 9, vectorRows: true, Parallelism.Single);
        var part = Enumerable.Repeat(float.NaN, 9 * Dim).ToArray();
        ffn.Forward(w, x, part, 3, 4, vectorRows: true, Parallelism.Single);
        // Matrix-vector rows do not depend on their neighbours: rows 3..6 alone equal the same rows of the whole batch.
        Assert.Equal(whole.AsSpan(3 * Dim, 4 * Dim).ToArray(), part.AsSpan(3 * Dim, 4 * Dim).ToArray());
        Assert.True(float.IsNaN(part[0]) && float.IsNaN(part[^1]), "rows outside the range were written");
    }

    [Fact]
    public void RouterPicksTheLargestProbabilitiesAndRenormalises()
    {
        float[] logits = [0.5f, 2f, -1f, 1.9f, 2f];
        var probs = new float[5];
        var ids = new int[3];
        var ws = new float[3];
        ExpertRouter.Route(logits, normalize: false, ids, ws, probs);
        Assert.Equal([1, 4, 3], ids);   // equal logits: the lower index first
        double z = logits.Sum(l => Math.Exp(l));
        for (int j = 0; j < 3; j++) Assert.Equal(Math.Exp(logits[ids[j]]) / z, ws[j], 1e-6);
        ExpertRouter.Route(logits, normalize: true, ids, ws, probs);
        Assert.Equal(1.0, ws.Sum(), 1e-6);
        Assert.Throws<ArgumentException>(() => ExpertRouter.Route(logits, true, new int[6], new float[6], new float[6]));
    }

    private static double[] Reference(ExpertConfig c, ExpertWeights w, ReadOnlySpan<float> x)
    {
        double Dot(WeightMatrix m, int r, ReadOnlySpan<double> v)
        {
            var row = new float[m.Cols];
            m.DequantizeRow(r, row);
            double s = 0;
            for (int i = 0; i < row.Length; i++) s += row[i] * v[i];
            return s;
        }
        var xd = new double[x.Length];
        for (int i = 0; i < x.Length; i++) xd[i] = x[i];
        var logits = Enumerable.Range(0, c.Count).Select(e => Dot(w.Router, e, xd)).ToArray();
        double max = logits.Max();
        var p = logits.Select(l => Math.Exp(l - max)).ToArray();
        double z = p.Sum();
        for (int e = 0; e < p.Length; e++) p[e] /= z;
        var chosen = Enumerable.Range(0, c.Count).OrderByDescending(e => p[e]).ThenBy(e => e).Take(c.Used).ToArray();
        double norm = c.NormalizeWeights ? chosen.Sum(e => p[e]) : 1;
        var y = new double[Dim];
        double[] Ffn(WeightMatrix g, WeightMatrix u, WeightMatrix d)
        {
            var h = new double[g.Rows];
            for (int r = 0; r < g.Rows; r++)
            {
                double a = Dot(g, r, xd), b = Dot(u, r, xd);
                h[r] = a / (1 + Math.Exp(-a)) * b;
            }
            return Enumerable.Range(0, Dim).Select(r => Dot(d, r, h)).ToArray();
        }
        foreach (var e in chosen)
        {
            var o = Ffn(w.Gate[e], w.Up[e], w.Down[e]);
            for (int i = 0; i < Dim; i++) y[i] += p[e] / norm * o[i];
        }
        if (w.SharedGate != null)
        {
            var o = Ffn(w.SharedGate, w.SharedUp!, w.SharedDown!);
            double g = 0;
            for (int i = 0; i < Dim; i++) g += w.SharedGateInput![i] * xd[i];
            double s = 1 / (1 + Math.Exp(-g));
            for (int i = 0; i < Dim; i++) y[i] += s * o[i];
        }
        return y;
    }

    private static ExpertWeights RandomWeights(ExpertConfig c, Random rng)
    {
        WeightMatrix M(string name, int rows, int cols, float gain = 1f) =>
            WeightMatrix.FromFloats(name, rows, cols, Tensors.QuantTestData.RandomGaussian(rows * cols, rng, gain / MathF.Sqrt(cols)));
        // Stacked as in a GGUF (one tensor, experts as row blocks), then viewed per expert like the loader does.
        WeightMatrix[] Stacked(string name, int rows, int cols)
        {
            var all = M(name, rows * c.Count, cols);
            return Enumerable.Range(0, c.Count).Select(e => all.SliceRows($"{name}[{e}]", e * rows, rows)).ToArray();
        }
        return new ExpertWeights
        {
            Router = M("router", c.Count, Dim, 2f),
            Gate = Stacked("gate", c.FfnDim, Dim),
            Up = Stacked("up", c.FfnDim, Dim),
            Down = Stacked("down", Dim, c.FfnDim),
            SharedGate = c.SharedFfnDim > 0 ? M("sg", c.SharedFfnDim, Dim) : null,
            SharedUp = c.SharedFfnDim > 0 ? M("su", c.SharedFfnDim, Dim) : null,
            SharedDown = c.SharedFfnDim > 0 ? M("sd", Dim, c.SharedFfnDim) : null,
            SharedGateInput = c.SharedFfnDim > 0 ? Tensors.QuantTestData.RandomGaussian(Dim, rng, 0.2f) : null,
        };
    }
}
