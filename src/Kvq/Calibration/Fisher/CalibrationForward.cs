using System.Numerics.Tensors;
using Kvq.Model;
using Kvq.Tensors;

namespace Kvq.Calibration.Fisher;

/// <summary>
/// The forward pass of <see cref="Transformer"/> over one calibration window (tokens at positions 0..T-1), in f32 with
/// the same kernels, keeping the activations <see cref="CalibrationBackward"/> needs. The loss is the mean next-token
/// cross-entropy over the window's T-1 predictions.
/// </summary>
public sealed class CalibrationForward
{
    public ModelWeights Weights { get; }
    public Parallelism Parallelism { get; }
    /// <summary>Optional hook on each layer's pre-RoPE keys and values (see <see cref="KvInjection"/>).</summary>
    public KvInjection? Injection { get; set; }
    private readonly Rope[] _ropes;
    private readonly float _queryScale;

    public CalibrationForward(ModelWeights weights, Parallelism? parallelism = null)
    {
        Weights = weights;
        Parallelism = parallelism ?? Parallelism.Default;
        (_ropes, _queryScale) = LayerRopes(weights.Config);
    }

    /// <summary>Each layer's RoPE (as the cache's <see cref="Cache.KvShape.RopeOf"/>) and the factor on queries beyond
    /// YaRN's: a model's own attention scale relative to 1/sqrt(head dim) (Gemma's query_pre_attn_scalar).</summary>
    internal static (Rope[] Ropes, float QueryScale) LayerRopes(ModelConfig c)
    {
        var shape = c.CreateKvShape();
        float qs = c.Extras is { AttentionScale: > 0 } e ? e.AttentionScale * MathF.Sqrt(c.HeadDim) : 1f;
        return (Enumerable.Range(0, c.Layers).Select(shape.RopeOf).ToArray(), qs);
    }

    public CalibrationTape Run(ReadOnlySpan<int> tokens)
    {
        var c = Weights.Config;
        int n = tokens.Length;
        if (n < 2) throw new ArgumentException($"a calibration window needs at least 2 tokens, got {n}", nameof(tokens));
        int dim = c.Dim, qDim = c.QDim, kvDim = c.KvDim, ffn = c.FfnDim, vocab = c.VocabSize;
        var par = Parallelism;
        var x = new float[n * dim];       // (T, dim) residual stream
        var xn = new float[n * dim];      // (T, dim) normed input of a sub-block
        var att = new float[n * qDim];    // (T, qDim) attention output
        var proj = new float[n * dim];    // (T, dim) output of Wo / WDown
        var h = new float[n * ffn];       // (T, ffn) silu(gate) * up
        for (int t = 0; t < n; t++)
        {
            int id = tokens[t];
            if ((uint)id >= (uint)vocab) throw new ArgumentOutOfRangeException(nameof(tokens), $"token id {id} at {t} is outside the vocabulary (0..{vocab - 1})");
            Weights.TokenEmbedding.DequantizeRow(id, x.AsSpan(t * dim, dim));
        }
        var extras = c.Extras;
        if (extras != null) TensorPrimitives.Multiply(x, extras.EmbeddingScale, x);
        float attnCap = extras?.AttnSoftCap ?? 0f;
        var layers = new LayerTape[c.Layers];
        for (int l = 0; l < c.Layers; l++)
        {
            var w = Weights.Layers[l];
            var xIn = (float[])x.Clone();
            for (int t = 0; t < n; t++)
                Kernels.RmsNorm(x.AsSpan(t * dim, dim), w.AttnNorm, c.NormEps, xn.AsSpan(t * dim, dim));
            var q = new float[n * qDim];
            var kPre = new float[n * kvDim];
            var v = new float[n * kvDim];
            w.Wq.MatMul(xn, q, n, par);
            w.Wk.MatMul(xn, kPre, n, par);
            w.Wv.MatMul(xn, v, n, par);
            for (int t = 0; t < n; t++)
            {
                if (w.Bq != null) TensorPrimitives.Add(q.AsSpan(t * qDim, qDim), w.Bq, q.AsSpan(t * qDim, qDim));
                if (w.Bk != null) TensorPrimitives.Add(kPre.AsSpan(t * kvDim, kvDim), w.Bk, kPre.AsSpan(t * kvDim, kvDim));
                if (w.Bv != null) TensorPrimitives.Add(v.AsSpan(t * kvDim, kvDim), w.Bv, v.AsSpan(t * kvDim, kvDim));
            }
            // QK-norm: the cache (and so the injection and the Fisher gradient) sees the normed keys; the raw ones are kept
            // for the backward pass through the norm.
            float[]? qRaw = null, kRaw = null;
            if (w.QNorm != null && w.KNorm != null)
            {
                qRaw = (float[])q.Clone();
                kRaw = (float[])kPre.Clone();
                for (int t = 0; t < n; t++)
                {
                    Transformer.HeadNorm(q.AsSpan(t * qDim, qDim), c.Heads, c.HeadDim, w.QNorm, c.NormEps);
                    Transformer.HeadNorm(kPre.AsSpan(t * kvDim, kvDim), c.KvHeads, c.HeadDim, w.KNorm, c.NormEps);
                }
            }
            Injection?.Invoke(l, kPre, v);
            var kRot = (float[])kPre.Clone();
            var rope = _ropes[l];
            for (int t = 0; t < n; t++)
            {
                rope.RotateHeads(q.AsSpan(t * qDim, qDim), c.Heads, t);
                rope.RotateHeads(kRot.AsSpan(t * kvDim, kvDim), c.KvHeads, t);
            }
            float qScale = rope.QueryScale * _queryScale;
            if (qScale != 1f) TensorPrimitives.Multiply(q, qScale, q);
            CausalAttention.Forward(q, kRot, v, att, n, c.Heads, c.KvHeads, c.HeadDim, par, c.WindowOf(l), attnCap);
            w.Wo.MatMul(att, proj, n, par);
            var attnProj = PostNorm(w.AttnPostNorm, proj, n, dim, c.NormEps);
            TensorPrimitives.Add(x, proj, x);
            var xMid = (float[])x.Clone();
            for (int t = 0; t < n; t++)
                Kernels.RmsNorm(x.AsSpan(t * dim, dim), w.FfnNorm, c.NormEps, xn.AsSpan(t * dim, dim));
            float[] gate = [], up = [];
            ExpertTape? experts = null;
            if (w.Experts != null) experts = ExpertCalibration.Forward(c.Experts!, w.Experts, xn, proj, n, dim, par);
            else
            {
                gate = new float[n * ffn];
                up = new float[n * ffn];
                var (wGate, wUp, wDown) = w.DenseFfn("the calibration's Fisher backward pass (kvq calibrate)");
                wGate.MatMul(xn, gate, n, par);
                wUp.MatMul(xn, up, n, par);
                gate.CopyTo(h, 0);
                if (extras?.Activation == FfnActivation.GeluTanh) DecoderExtras.GeGlu(h, up);
                else Kernels.SwiGlu(h, up);
                wDown.MatMul(h, proj, n, par);
            }
            var ffnProj = PostNorm(w.FfnPostNorm, proj, n, dim, c.NormEps);
            TensorPrimitives.Add(x, proj, x);
            layers[l] = new LayerTape
            {
                XIn = xIn, Q = q, KPre = kPre, KRot = kRot, V = v, XMid = xMid, Gate = gate, Up = up, QRaw = qRaw, KRaw = kRaw,
                AttnProj = attnProj, FfnProj = ffnProj, Experts = experts,
            };
        }
        for (int t = 0; t < n; t++)
            Kernels.RmsNorm(x.AsSpan(t * dim, dim), Weights.OutputNorm, c.NormEps, xn.AsSpan(t * dim, dim));
        var logits = new float[(long)n * vocab];
        Weights.Output.MatMul(xn, logits, n, par);
        float finalCap = extras?.FinalSoftCap ?? 0f;
        float[]? capped = null;
        if (finalCap > 0)
        {
            DecoderExtras.SoftCap(logits, finalCap);
            capped = (float[])logits.Clone();
        }
        double loss = CrossEntropy(logits, tokens, vocab, par);
        // Through the final soft-cap: d/dz cap tanh(z / cap) = 1 - tanh^2.
        if (capped != null)
            for (long i = 0; i < logits.Length; i++)
            {
                float th = capped[i] / finalCap;
                logits[i] *= 1f - th * th;
            }
        return new CalibrationTape(tokens.ToArray(), loss, logits, x, layers);
    }

    /// <summary>Gemma's post-norm of a sub-block's output rows, in place; returns the rows before it (for the backward
    /// pass), or null without one.</summary>
    private static float[]? PostNorm(float[]? weight, float[] proj, int n, int dim, float eps)
    {
        if (weight == null) return null;
        var before = (float[])proj.Clone();
        for (int t = 0; t < n; t++) Kernels.RmsNorm(before.AsSpan(t * dim, dim), weight, eps, proj.AsSpan(t * dim, dim));
        return before;
    }

    /// <summary>Mean cross-entropy of rows 0..T-2 against the next token; turns logits into d loss / d logits in place.</summary>
    private static unsafe double CrossEntropy(float[] logits, ReadOnlySpan<int> tokens, int vocab, Parallelism par)
    {
        int n = tokens.Length;
        var nll = new double[n - 1];
        var targets = tokens.ToArray();
        fixed (float* pl = logits)
        {
            var job = new CrossEntropyJob(pl, targets, nll, vocab, 1f / (n - 1));
            par.For(n - 1, 64, ref job);
        }
        logits.AsSpan((n - 1) * vocab, vocab).Clear();
        double sum = 0;
        foreach (var v in nll) sum += v;
        return sum / (n - 1);
    }

    private readonly unsafe struct CrossEntropyJob(float* logits, int[] targets, double[] nll, int vocab, float scale) : IRangeJob
    {
        public void Run(int start, int end)
        {
            var scratch = new float[vocab];
            for (int t = start; t < end; t++)
            {
                var row = new Span<float>(logits + (long)t * vocab, vocab);
                row.CopyTo(scratch);
                nll[t] = BackwardKernels.SoftmaxCrossEntropy(scratch, targets[t + 1], scale, row);
            }
        }
    }
}
