using System.Numerics.Tensors;
using Kvq.Model.Experts;
using Kvq.Tensors;

namespace Kvq.Calibration.Fisher;

/// <summary>What the Fisher pass keeps of a mixture-of-experts feed-forward over one window, token-major.</summary>
internal sealed class ExpertTape
{
    public required float[] Probs { get; init; }    // (T, experts) the router's softmax
    public required int[] Chosen { get; init; }     // (T, used) chosen experts
    public required float[] Weights { get; init; }  // (T, used) their routing weights (renormalised or not)
    public required float[] Gate { get; init; }     // (T, used, ffn) each chosen expert's WGate x
    public required float[] Up { get; init; }       // (T, used, ffn) its WUp x
    public required float[] Out { get; init; }      // (T, used, dim) its output before weighting
    public float[]? SharedGate { get; init; }       // (T, shared ffn)
    public float[]? SharedUp { get; init; }
    public float[]? SharedOut { get; init; }        // (T, dim) the shared expert's output before its sigmoid gate
    public float[]? SharedLogit { get; init; }      // (T) the shared expert's gate logit
}

/// <summary>
/// The mixture-of-experts feed-forward (<see cref="ExpertFeedForward"/>: softmax router, top-k, optionally renormalised
/// weights, SwiGLU experts, Qwen2-MoE's sigmoid-gated shared expert) for the Fisher pass: forward token by token keeping
/// each chosen expert's activations, and its backward to the normed input. The choice of experts is piecewise constant
/// (no gradient); the weights are not: with p = softmax(r) over all experts and w_i = p_i (or p_i / sum over the chosen
/// of p), d loss / d w_i = dy . out_i flows back through the renormalisation and the softmax to the router logits.
/// Per-token matrix-vector products: calibration windows are short and this pass runs once per model.
/// </summary>
internal static class ExpertCalibration
{
    public static ExpertTape Forward(ExpertConfig c, ExpertWeights w, float[] xn, float[] y, int n, int dim, Parallelism par)
    {
        int ne = c.Count, k = c.Used, ffn = c.FfnDim;
        var logits = new float[n * ne];
        w.Router.MatMul(xn, logits, n, par);
        var probs = new float[n * ne];
        var chosen = new int[n * k];
        var weights = new float[n * k];
        for (int t = 0; t < n; t++)
            ExpertRouter.Route(logits.AsSpan(t * ne, ne), c.NormalizeWeights, chosen.AsSpan(t * k, k), weights.AsSpan(t * k, k), probs.AsSpan(t * ne, ne));
        var gate = new float[n * k * ffn];
        var up = new float[n * k * ffn];
        var outp = new float[n * k * dim];
        var h = new float[ffn];
        Array.Clear(y, 0, n * dim);
        for (int t = 0; t < n; t++)
        {
            var x = xn.AsSpan(t * dim, dim);
            var row = y.AsSpan(t * dim, dim);
            for (int j = 0; j < k; j++)
            {
                int e = chosen[t * k + j], at = t * k + j;
                var g = gate.AsSpan(at * ffn, ffn);
                var u = up.AsSpan(at * ffn, ffn);
                var o = outp.AsSpan(at * dim, dim);
                w.Gate[e].MatVec(x, g, par);
                w.Up[e].MatVec(x, u, par);
                g.CopyTo(h);
                Kernels.SwiGlu(h, u);
                w.Down[e].MatVec(h, o, par);
                TensorPrimitives.MultiplyAdd(o, weights[at], row, row);
            }
        }
        if (w.SharedGate == null)
            return new ExpertTape { Probs = probs, Chosen = chosen, Weights = weights, Gate = gate, Up = up, Out = outp };
        int sf = c.SharedFfnDim;
        var sg = new float[n * sf];
        var su = new float[n * sf];
        var so = new float[n * dim];
        var sl = new float[n];
        w.SharedGate.MatMul(xn, sg, n, par);
        w.SharedUp!.MatMul(xn, su, n, par);
        var hs = (float[])sg.Clone();
        Kernels.SwiGlu(hs, su);
        w.SharedDown!.MatMul(hs, so, n, par);
        for (int t = 0; t < n; t++)
        {
            sl[t] = TensorPrimitives.Dot(w.SharedGateInput!, xn.AsSpan(t * dim, dim));
            var row = y.AsSpan(t * dim, dim);
            TensorPrimitives.MultiplyAdd(so.AsSpan(t * dim, dim), Sigmoid(sl[t]), row, row);
        }
        return new ExpertTape
        {
            Probs = probs, Chosen = chosen, Weights = weights, Gate = gate, Up = up, Out = outp,
            SharedGate = sg, SharedUp = su, SharedOut = so, SharedLogit = sl,
        };
    }

    /// <summary>dxn (T, dim) = d loss / d (normed input), given dy (T, dim) = d loss / d (feed-forward output).</summary>
    public static void Backward(ExpertConfig c, ExpertWeights w, ExpertTape s, float[] dy, float[] dxn, int n, int dim, Parallelism par)
    {
        int ne = c.Count, k = c.Used, ffn = c.FfnDim;
        Array.Clear(dxn, 0, n * dim);
        var dh = new float[ffn];
        var dGate = new float[ffn];
        var dUp = new float[ffn];
        var scaled = new float[dim];
        var dw = new float[k];
        var dp = new float[ne];
        var dr = new float[ne];
        for (int t = 0; t < n; t++)
        {
            var g = dy.AsSpan(t * dim, dim);
            var dx = dxn.AsSpan(t * dim, dim);
            for (int j = 0; j < k; j++)
            {
                int e = s.Chosen[t * k + j], at = t * k + j;
                dw[j] = TensorPrimitives.Dot(g, s.Out.AsSpan(at * dim, dim));
                TensorPrimitives.Multiply(g, s.Weights[at], scaled);
                Array.Clear(dh);
                TransposedProduct.AddTo(w.Down[e], scaled, dh, 1, par);
                BackwardKernels.SwiGluBackward(s.Gate.AsSpan(at * ffn, ffn), s.Up.AsSpan(at * ffn, ffn), dh, dGate, dUp);
                TransposedProduct.AddTo(w.Gate[e], dGate, dx, 1, par);
                TransposedProduct.AddTo(w.Up[e], dUp, dx, 1, par);
            }
            // Routing weights -> probabilities -> router logits.
            var p = s.Probs.AsSpan(t * ne, ne);
            Array.Clear(dp);
            if (c.NormalizeWeights)
            {
                // w_j = p_j / S, S = sum of the chosen p: dp_i = (dw_i - sum_j dw_j w_j) / S.
                float sum = 0, dot = 0;
                for (int j = 0; j < k; j++) sum += p[s.Chosen[t * k + j]];
                for (int j = 0; j < k; j++) dot += dw[j] * s.Weights[t * k + j];
                for (int j = 0; j < k; j++) dp[s.Chosen[t * k + j]] = (dw[j] - dot) / sum;
            }
            else
                for (int j = 0; j < k; j++) dp[s.Chosen[t * k + j]] = dw[j];
            float pdp = TensorPrimitives.Dot(p, dp);
            for (int i = 0; i < ne; i++) dr[i] = p[i] * (dp[i] - pdp);
            TransposedProduct.AddTo(w.Router, dr, dx, 1, par);
        }
        if (w.SharedGate == null) return;
        int sf = c.SharedFfnDim;
        var dsh = new float[n * sf];
        var dsg = new float[n * sf];
        var dsu = new float[n * sf];
        var gated = new float[n * dim];
        for (int t = 0; t < n; t++)
        {
            float sig = Sigmoid(s.SharedLogit![t]);
            var g = dy.AsSpan(t * dim, dim);
            TensorPrimitives.Multiply(g, sig, gated.AsSpan(t * dim, dim));
            // y += sigmoid(a) out, a = gateInput . x: da = (dy . out) sig (1 - sig).
            float da = TensorPrimitives.Dot(g, s.SharedOut.AsSpan(t * dim, dim)) * sig * (1f - sig);
            TensorPrimitives.MultiplyAdd(w.SharedGateInput!, da, dxn.AsSpan(t * dim, dim), dxn.AsSpan(t * dim, dim));
        }
        TransposedProduct.AddTo(w.SharedDown!, gated, dsh, n, par);
        BackwardKernels.SwiGluBackward(s.SharedGate, s.SharedUp!, dsh, dsg, dsu);
        TransposedProduct.AddTo(w.SharedGate, dsg, dxn, n, par);
        TransposedProduct.AddTo(w.SharedUp!, dsu, dxn, n, par);
    }

    private static float Sigmoid(float a) => 1f / (1f + MathF.Exp(-a));
}
