using Kvq.Model;
using Kvq.Tensors;

namespace Kvq.Tests.Calibration.Fisher;

/// <summary>One pre-RoPE K or V element of the forward pass, moved by <see cref="Delta"/>.</summary>
internal readonly record struct KvNudge(int Layer, bool Key, int Token, int Column, double Delta);

/// <summary>
/// The forward pass written again in float64, straight-line and scalar (test oracle for small models): the loss of a
/// window as a function of one nudged pre-RoPE K or V element, for finite differences with no f32 rounding in the way.
/// RoPE uses the model's own float angles (they are constants of the function, not a source of error).
/// </summary>
internal sealed class ReferenceModel64
{
    private readonly ModelConfig _c;
    private readonly Rope[] _ropes;
    private readonly double _queryScale;
    private readonly double[] _embedding, _output, _outputNorm;
    private readonly Layer[] _layers;

    private sealed record Layer(double[] AttnNorm, double[] Wq, double[] Wk, double[] Wv, double[] Wo,
        double[]? Bq, double[]? Bk, double[]? Bv, double[] FfnNorm, double[] WGate, double[] WUp, double[] WDown,
        double[]? QNorm, double[]? KNorm, double[]? AttnPostNorm, double[]? FfnPostNorm, MoeLayer? Moe);

    /// <summary>A mixture-of-experts feed-forward in float64: router (experts, dim), per expert gate/up (ffn, dim) and
    /// down (dim, ffn), and the optional sigmoid-gated shared expert.</summary>
    private sealed record MoeLayer(double[] Router, double[][] Gate, double[][] Up, double[][] Down,
        double[]? SharedGate, double[]? SharedUp, double[]? SharedDown, double[]? SharedGateInput);

    public ReferenceModel64(ModelWeights w)
    {
        _c = w.Config;
        var shape = _c.CreateKvShape();
        _ropes = Enumerable.Range(0, _c.Layers).Select(shape.RopeOf).ToArray();
        _queryScale = _c.Extras is { AttentionScale: > 0 } e ? e.AttentionScale * Math.Sqrt(_c.HeadDim) : 1;
        _embedding = Dense(w.TokenEmbedding);
        _output = Dense(w.Output);
        _outputNorm = D(w.OutputNorm)!;
        _layers = w.Layers.Select(l => new Layer(D(l.AttnNorm)!, Dense(l.Wq), Dense(l.Wk), Dense(l.Wv), Dense(l.Wo),
            D(l.Bq), D(l.Bk), D(l.Bv), D(l.FfnNorm)!, DenseOrNull(l.WGate), DenseOrNull(l.WUp), DenseOrNull(l.WDown), D(l.QNorm), D(l.KNorm),
            D(l.AttnPostNorm), D(l.FfnPostNorm),
            l.Experts is { } e
                ? new MoeLayer(Dense(e.Router), e.Gate.Select(Dense).ToArray(), e.Up.Select(Dense).ToArray(), e.Down.Select(Dense).ToArray(),
                    DenseOrNull(e.SharedGate), DenseOrNull(e.SharedUp), DenseOrNull(e.SharedDown), D(e.SharedGateInput))
                : null)).ToArray();
    }

    private static double[]? D(float[]? a) => a?.Select(x => (double)x).ToArray();

    private static double[] DenseOrNull(WeightMatrix? m) => m == null ? [] : Dense(m);

    /// <summary>Softmax router, top-k (ties to the lower index), weights renormalised or not, SwiGLU experts, shared expert.</summary>
    private double[] Moe(MoeLayer m, double[] xn, int n)
    {
        var e = _c.Experts!;
        int dim = _c.Dim, ne = e.Count, ffn = e.FfnDim;
        var logits = MatMul(m.Router, null, xn, n, ne, dim);
        var y = new double[n * dim];
        for (int t = 0; t < n; t++)
        {
            double max = double.NegativeInfinity, sum = 0;
            for (int i = 0; i < ne; i++) max = Math.Max(max, logits[t * ne + i]);
            var p = new double[ne];
            for (int i = 0; i < ne; i++) sum += p[i] = Math.Exp(logits[t * ne + i] - max);
            for (int i = 0; i < ne; i++) p[i] /= sum;
            var chosen = Enumerable.Range(0, ne).OrderByDescending(i => p[i]).ThenBy(i => i).Take(e.Used).ToArray();
            double norm = e.NormalizeWeights ? chosen.Sum(i => p[i]) : 1;
            var x = xn.AsSpan(t * dim, dim).ToArray();
            foreach (int i in chosen)
            {
                var o = SwiGlu(m.Gate[i], m.Up[i], m.Down[i], x, ffn);
                for (int d = 0; d < dim; d++) y[t * dim + d] += p[i] / norm * o[d];
            }
            if (m.SharedGateInput != null)
            {
                var o = SwiGlu(m.SharedGate!, m.SharedUp!, m.SharedDown!, x, e.SharedFfnDim);
                double a = 0;
                for (int d = 0; d < dim; d++) a += m.SharedGateInput![d] * x[d];
                double s = 1 / (1 + Math.Exp(-a));
                for (int d = 0; d < dim; d++) y[t * dim + d] += s * o[d];
            }
        }
        return y;
    }

    private double[] SwiGlu(double[] gate, double[] up, double[] down, double[] x, int ffn)
    {
        var g = MatMul(gate, null, x, 1, ffn, _c.Dim);
        var u = MatMul(up, null, x, 1, ffn, _c.Dim);
        for (int i = 0; i < ffn; i++) g[i] = g[i] / (1 + Math.Exp(-g[i])) * u[i];
        return MatMul(down, null, g, 1, _c.Dim, ffn);
    }

    private static double[] Dense(WeightMatrix m)
    {
        var row = new float[m.Cols];
        var d = new double[(long)m.Rows * m.Cols];
        for (int r = 0; r < m.Rows; r++)
        {
            m.DequantizeRow(r, row);
            for (int c = 0; c < m.Cols; c++) d[(long)r * m.Cols + c] = row[c];
        }
        return d;
    }

    /// <summary>Mean next-token cross-entropy of the window (nats), with <paramref name="nudge"/> applied.</summary>
    public double Loss(int[] tokens, KvNudge? nudge = null)
    {
        int n = tokens.Length, dim = _c.Dim, qDim = _c.QDim, kvDim = _c.KvDim, ffn = _c.FfnDim, hd = _c.HeadDim;
        var x = new double[n * dim];
        for (int t = 0; t < n; t++) Array.Copy(_embedding, (long)tokens[t] * dim, x, t * dim, dim);
        var extras = _c.Extras;
        if (extras != null) for (int i = 0; i < x.Length; i++) x[i] *= extras.EmbeddingScale;   // Gemma: sqrt(dim)
        var xn = new double[n * dim];
        for (int l = 0; l < _c.Layers; l++)
        {
            var w = _layers[l];
            Norm(x, w.AttnNorm, xn, n);
            var q = MatMul(w.Wq, w.Bq, xn, n, qDim, dim);
            var k = MatMul(w.Wk, w.Bk, xn, n, kvDim, dim);
            var v = MatMul(w.Wv, w.Bv, xn, n, kvDim, dim);
            // QK-norm before RoPE; the nudge moves a normed key, as the cache holds it.
            if (w.QNorm != null) HeadNorm(q, w.QNorm, n * _c.Heads);
            if (w.KNorm != null) HeadNorm(k, w.KNorm, n * _c.KvHeads);
            if (nudge is { } p && p.Layer == l) (p.Key ? k : v)[p.Token * kvDim + p.Column] += p.Delta;
            var rope = _ropes[l];
            for (int t = 0; t < n; t++)
            {
                Rotate(rope, q, t * qDim, _c.Heads, t);
                Rotate(rope, k, t * kvDim, _c.KvHeads, t);
            }
            // YaRN magnitude and a model's own attention scale (1 otherwise).
            for (int i = 0; i < q.Length; i++) q[i] *= rope.QueryScale * _queryScale;
            var att = CausalAttentionTests.Forward64(q, k, v, n, _c.Heads, _c.KvHeads, hd, _c.WindowOf(l), extras?.AttnSoftCap ?? 0);
            var o = MatMul(w.Wo, null, att, n, dim, qDim);
            if (w.AttnPostNorm != null) Norm(o, w.AttnPostNorm, o, n);
            for (int i = 0; i < x.Length; i++) x[i] += o[i];
            Norm(x, w.FfnNorm, xn, n);
            if (w.Moe != null)
            {
                var moe = Moe(w.Moe, xn, n);
                for (int i = 0; i < x.Length; i++) x[i] += moe[i];
                continue;
            }
            var gate = MatMul(w.WGate, null, xn, n, ffn, dim);
            var up = MatMul(w.WUp, null, xn, n, ffn, dim);
            bool gelu = extras?.Activation == FfnActivation.GeluTanh;
            for (int i = 0; i < gate.Length; i++)
            {
                double g = gate[i];
                double act = gelu ? 0.5 * g * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (g + 0.044715 * g * g * g))) : g / (1 + Math.Exp(-g));
                gate[i] = act * up[i];
            }
            var down = MatMul(w.WDown, null, gate, n, dim, ffn);
            if (w.FfnPostNorm != null) Norm(down, w.FfnPostNorm, down, n);
            for (int i = 0; i < x.Length; i++) x[i] += down[i];
        }
        Norm(x, _outputNorm, xn, n);
        int vocab = _c.VocabSize;
        var logits = MatMul(_output, null, xn, n, vocab, dim);
        if (extras is { FinalSoftCap: > 0 } fc)
            for (int i = 0; i < logits.Length; i++) logits[i] = fc.FinalSoftCap * Math.Tanh(logits[i] / fc.FinalSoftCap);
        double nll = 0;
        for (int t = 0; t + 1 < n; t++)
        {
            double max = double.NegativeInfinity, sum = 0;
            for (int i = 0; i < vocab; i++) max = Math.Max(max, logits[t * vocab + i]);
            for (int i = 0; i < vocab; i++) sum += Math.Exp(logits[t * vocab + i] - max);
            nll += Math.Log(sum) + max - logits[t * vocab + tokens[t + 1]];
        }
        return nll / (n - 1);
    }

    private void Norm(double[] x, double[] w, double[] y, int n)
    {
        int dim = _c.Dim;
        for (int t = 0; t < n; t++)
        {
            double ss = 0;
            for (int i = 0; i < dim; i++) ss += x[t * dim + i] * x[t * dim + i];
            double r = 1 / Math.Sqrt(ss / dim + _c.NormEps);
            for (int i = 0; i < dim; i++) y[t * dim + i] = x[t * dim + i] * r * w[i];
        }
    }

    /// <summary>RMSNorm of each of <paramref name="rows"/> head vectors of a flat array, in place.</summary>
    private void HeadNorm(double[] a, double[] w, int rows)
    {
        int hd = _c.HeadDim;
        for (int r = 0; r < rows; r++)
        {
            double ss = 0;
            for (int i = 0; i < hd; i++) ss += a[r * hd + i] * a[r * hd + i];
            double s = 1 / Math.Sqrt(ss / hd + _c.NormEps);
            for (int i = 0; i < hd; i++) a[r * hd + i] = a[r * hd + i] * s * w[i];
        }
    }

    /// <summary>(n, rows) = (n, cols) W^T + b, W (rows, cols) row-major.</summary>
    private static double[] MatMul(double[] w, double[]? b, double[] x, int n, int rows, int cols)
    {
        var y = new double[n * rows];
        for (int t = 0; t < n; t++)
            for (int r = 0; r < rows; r++)
            {
                double s = b?[r] ?? 0;
                for (int c = 0; c < cols; c++) s += w[(long)r * cols + c] * x[t * cols + c];
                y[t * rows + r] = s;
            }
        return y;
    }

    private void Rotate(Rope rope, double[] vec, int offset, int heads, int position)
    {
        int half = rope.RopeDims / 2, hd = _c.HeadDim;
        var cos = new float[half];
        var sin = new float[half];
        rope.Angles(position, cos, sin);
        bool normal = rope.Style == RopeStyle.Normal;
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < half; i++)
            {
                int a = offset + h * hd + (normal ? 2 * i : i), b = offset + h * hd + (normal ? 2 * i + 1 : i + half);
                double va = vec[a], vb = vec[b];
                vec[a] = va * cos[i] - vb * sin[i];
                vec[b] = va * sin[i] + vb * cos[i];
            }
    }
}
