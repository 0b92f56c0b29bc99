using Kvq.Model;
using Kvq.Tensors;

namespace Kvq.Calibration.Fisher;

/// <summary>
/// Reverse pass of <see cref="CalibrationForward"/>: from d loss / d logits back through the output projection, the
/// final norm and every layer to the residual stream, collecting on the way d loss / d K (before RoPE) and d loss / d V
/// at every layer. Weights are constants: no weight gradients are formed.
/// </summary>
public sealed class CalibrationBackward
{
    public ModelWeights Weights { get; }
    public Parallelism Parallelism { get; }
    private readonly Rope _rope;

    public CalibrationBackward(ModelWeights weights, Parallelism? parallelism = null)
    {
        Weights = weights;
        Parallelism = parallelism ?? Parallelism.Default;
        _rope = weights.Config.CreateRope();
    }

    /// <summary>Forward and backward over one window.</summary>
    public static KvGradients Compute(ModelWeights weights, ReadOnlySpan<int> tokens, Parallelism? parallelism = null) =>
        new CalibrationBackward(weights, parallelism).Run(new CalibrationForward(weights, parallelism).Run(tokens));

    public KvGradients Run(CalibrationTape tape)
    {
        var c = Weights.Config;
        int n = tape.Length;
        int dim = c.Dim, qDim = c.QDim, kvDim = c.KvDim, ffn = c.FfnDim;
        var par = Parallelism;
        var dx = new float[n * dim];      // (T, dim) d loss / d residual stream at the current point
        var dxn = new float[n * dim];     // (T, dim) d loss / d normed input of a sub-block
        var dh = new float[n * ffn];      // (T, ffn) d loss / d (silu(gate) * up)
        var dGate = new float[n * ffn];
        var dUp = new float[n * ffn];
        var dAtt = new float[n * qDim];   // (T, qDim) d loss / d attention output
        var dQ = new float[n * qDim];     // (T, qDim) rotated, then rotated back
        var dKRot = new float[n * kvDim];

        TransposedProduct.AddTo(Weights.Output, tape.DLogits, dxn, n, par);
        for (int t = 0; t < n; t++)
            BackwardKernels.RmsNormBackwardAdd(tape.FinalX.AsSpan(t * dim, dim), Weights.OutputNorm, c.NormEps,
                dxn.AsSpan(t * dim, dim), dx.AsSpan(t * dim, dim));

        var result = new LayerKvGradients[c.Layers];
        for (int l = c.Layers - 1; l >= 0; l--)
        {
            var w = Weights.Layers[l];
            var s = tape.Layers[l];
            // Feed-forward block: x_out = XMid + WDown (silu(gate) * up), gate/up = WGate/WUp RmsNorm(XMid).
            var (wGate, wUp, wDown) = w.DenseFfn("the calibration's Fisher backward pass (kvq calibrate)");
            Array.Clear(dh);
            TransposedProduct.AddTo(wDown, dx, dh, n, par);
            BackwardKernels.SwiGluBackward(s.Gate, s.Up, dh, dGate, dUp);
            Array.Clear(dxn);
            TransposedProduct.AddTo(wGate, dGate, dxn, n, par);
            TransposedProduct.AddTo(wUp, dUp, dxn, n, par);
            for (int t = 0; t < n; t++)
                BackwardKernels.RmsNormBackwardAdd(s.XMid.AsSpan(t * dim, dim), w.FfnNorm, c.NormEps,
                    dxn.AsSpan(t * dim, dim), dx.AsSpan(t * dim, dim));
            // Attention block: XMid = XIn + Wo attention(RoPE(q), RoPE(k), v), q/k/v = W RmsNorm(XIn) + b.
            Array.Clear(dAtt);
            TransposedProduct.AddTo(w.Wo, dx, dAtt, n, par);
            var dV = new float[n * kvDim];
            CausalAttention.Backward(s.Q, s.KRot, s.V, dAtt, dQ, dKRot, dV, n, c.Heads, c.KvHeads, c.HeadDim, par, c.WindowOf(l));
            var dK = dKRot;
            dKRot = new float[n * kvDim];
            for (int t = 0; t < n; t++)
            {
                BackwardKernels.RotateHeadsTransposed(_rope, dQ.AsSpan(t * qDim, qDim), c.Heads, t);
                BackwardKernels.RotateHeadsTransposed(_rope, dK.AsSpan(t * kvDim, kvDim), c.KvHeads, t);
            }
            if (_rope.QueryScale != 1f) System.Numerics.Tensors.TensorPrimitives.Multiply(dQ, _rope.QueryScale, dQ);
            // Through QK-norm: dK stays the gradient of the normed keys (what the cache holds); the projections get the raw ones.
            var dQIn = dQ;
            var dKIn = dK;
            if (s.QRaw != null && s.KRaw != null && w.QNorm != null && w.KNorm != null)
            {
                dQIn = HeadNormBackward(s.QRaw, w.QNorm, dQ, n, c.Heads, c.HeadDim, c.NormEps);
                dKIn = HeadNormBackward(s.KRaw, w.KNorm, dK, n, c.KvHeads, c.HeadDim, c.NormEps);
            }
            Array.Clear(dxn);
            TransposedProduct.AddTo(w.Wq, dQIn, dxn, n, par);
            TransposedProduct.AddTo(w.Wk, dKIn, dxn, n, par);
            TransposedProduct.AddTo(w.Wv, dV, dxn, n, par);
            for (int t = 0; t < n; t++)
                BackwardKernels.RmsNormBackwardAdd(s.XIn.AsSpan(t * dim, dim), w.AttnNorm, c.NormEps,
                    dxn.AsSpan(t * dim, dim), dx.AsSpan(t * dim, dim));
            result[l] = new LayerKvGradients(s.KPre, s.V, dK, dV);
        }
        return new KvGradients(n, kvDim, tape.Loss, result);
    }

    /// <summary>Gradient before <see cref="Transformer.HeadNorm"/> of every (token, head) of <paramref name="raw"/>.</summary>
    private static float[] HeadNormBackward(float[] raw, float[] weight, float[] dy, int n, int heads, int headDim, float eps)
    {
        var dx = new float[raw.Length];
        for (int r = 0; r < n * heads; r++)
            BackwardKernels.RmsNormBackwardAdd(raw.AsSpan(r * headDim, headDim), weight, eps, dy.AsSpan(r * headDim, headDim), dx.AsSpan(r * headDim, headDim));
        return dx;
    }
}
