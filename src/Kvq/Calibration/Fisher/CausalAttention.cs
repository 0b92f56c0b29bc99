using System.Numerics.Tensors;
using Kvq.Tensors;

namespace Kvq.Calibration.Fisher;

/// <summary>
/// Causal softmax attention over one window of tokens at positions 0..T-1, in f32, with grouped KV heads: query head
/// h reads KV head h / (heads / kvHeads); scores are scaled by 1/sqrt(headDim). Queries and keys come in already
/// rotated. Forward computes exactly what <see cref="Cache.DenseF32Sequence"/> computes (same kernels, same order).
/// Layouts are token-major: q, o (T, heads*headDim); k, v (T, kvHeads*headDim).
/// </summary>
public static unsafe class CausalAttention
{
    public static void Forward(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, Span<float> o,
        int tokens, int heads, int kvHeads, int headDim, Parallelism par)
    {
        var g = new Geometry(tokens, heads, kvHeads, headDim);
        g.Check(q.Length, k.Length, v.Length, o.Length);
        fixed (float* pq = q)
        fixed (float* pk = k)
        fixed (float* pv = v)
        fixed (float* po = o)
        {
            var job = new ForwardJob(g, pq, pk, pv, po);
            par.For(tokens * heads, 1, ref job);
        }
    }

    /// <summary>
    /// Writes the gradients dQ (T, heads*headDim), dK and dV (T, kvHeads*headDim) of the loss given dO, the gradient of
    /// the attention output. Probabilities are recomputed (nothing of size T^2 is stored); per query head,
    /// P = softmax(S), dP = dO V^T, dS = P (dP - rowsum(P dP)), dQ = scale dS K, dK = scale dS^T Q, dV = P^T dO.
    /// A KV head's gradient sums the gradients of its query heads.
    /// </summary>
    public static void Backward(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, ReadOnlySpan<float> dO,
        Span<float> dQ, Span<float> dK, Span<float> dV, int tokens, int heads, int kvHeads, int headDim, Parallelism par)
    {
        var g = new Geometry(tokens, heads, kvHeads, headDim);
        g.Check(q.Length, k.Length, v.Length, dO.Length);
        g.Check(dQ.Length, dK.Length, dV.Length, dQ.Length);
        // Per query head: (heads, T, headDim), so that heads run in parallel without sharing a KV gradient.
        var dKh = new float[(long)heads * tokens * headDim];
        var dVh = new float[(long)heads * tokens * headDim];
        fixed (float* pq = q)
        fixed (float* pk = k)
        fixed (float* pv = v)
        fixed (float* pdo = dO)
        fixed (float* pdq = dQ)
        fixed (float* pdk = dKh)
        fixed (float* pdv = dVh)
        {
            var job = new BackwardJob(g, pq, pk, pv, pdo, pdq, pdk, pdv);
            par.For(heads, 1, ref job);
        }
        int group = heads / kvHeads, kvDim = kvHeads * headDim;
        for (int t = 0; t < tokens; t++)
        {
            for (int kvh = 0; kvh < kvHeads; kvh++)
            {
                var dk = dK.Slice(t * kvDim + kvh * headDim, headDim);
                var dv = dV.Slice(t * kvDim + kvh * headDim, headDim);
                dk.Clear();
                dv.Clear();
                for (int h = kvh * group; h < (kvh + 1) * group; h++)
                {
                    long at = ((long)h * tokens + t) * headDim;
                    TensorPrimitives.Add(dk, dKh.AsSpan((int)at, headDim), dk);
                    TensorPrimitives.Add(dv, dVh.AsSpan((int)at, headDim), dv);
                }
            }
        }
    }

    private readonly record struct Geometry(int Tokens, int Heads, int KvHeads, int HeadDim)
    {
        public int QDim => Heads * HeadDim;
        public int KvDim => KvHeads * HeadDim;
        public int Group => Heads / KvHeads;
        public float Scale => 1f / MathF.Sqrt(HeadDim);

        public void Check(int qLen, int kLen, int vLen, int oLen)
        {
            if (Heads <= 0 || KvHeads <= 0 || Heads % KvHeads != 0 || HeadDim <= 0 || Tokens < 0)
                throw new ArgumentException($"attention geometry: {Heads} heads, {KvHeads} kv heads, head dim {HeadDim}, {Tokens} tokens");
            if (qLen < (long)Tokens * QDim || oLen < (long)Tokens * QDim || kLen < (long)Tokens * KvDim || vLen < (long)Tokens * KvDim)
                throw new ArgumentException($"attention shapes: q {qLen} o {oLen} (need {(long)Tokens * QDim}), k {kLen} v {vLen} (need {(long)Tokens * KvDim})");
        }
    }

    private readonly struct ForwardJob(Geometry g, float* q, float* k, float* v, float* o) : IRangeJob
    {
        public void Run(int start, int end)
        {
            int hd = g.HeadDim;
            var scores = new float[g.Tokens];
            for (int item = start; item < end; item++)
            {
                int t = item / g.Heads, h = item % g.Heads;
                int kvOff = h / g.Group * hd;
                var qh = new ReadOnlySpan<float>(q + (long)t * g.QDim + h * hd, hd);
                var sc = scores.AsSpan(0, t + 1);
                for (int j = 0; j <= t; j++) sc[j] = TensorPrimitives.Dot(qh, new ReadOnlySpan<float>(k + (long)j * g.KvDim + kvOff, hd)) * g.Scale;
                Kernels.Softmax(sc);
                var oh = new Span<float>(o + (long)t * g.QDim + h * hd, hd);
                oh.Clear();
                for (int j = 0; j <= t; j++)
                    TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(v + (long)j * g.KvDim + kvOff, hd), sc[j], oh, oh);
            }
        }
    }

    private readonly struct BackwardJob(Geometry g, float* q, float* k, float* v, float* dO, float* dQ, float* dKh, float* dVh) : IRangeJob
    {
        public void Run(int start, int end)
        {
            int hd = g.HeadDim;
            float scale = g.Scale;
            var p = new float[g.Tokens];
            var dp = new float[g.Tokens];
            for (int h = start; h < end; h++)
            {
                int kvOff = h / g.Group * hd;
                float* dkh = dKh + (long)h * g.Tokens * hd;
                float* dvh = dVh + (long)h * g.Tokens * hd;
                new Span<float>(dkh, g.Tokens * hd).Clear();
                new Span<float>(dvh, g.Tokens * hd).Clear();
                for (int t = 0; t < g.Tokens; t++)
                {
                    var qh = new ReadOnlySpan<float>(q + (long)t * g.QDim + h * hd, hd);
                    var doh = new ReadOnlySpan<float>(dO + (long)t * g.QDim + h * hd, hd);
                    var pt = p.AsSpan(0, t + 1);
                    for (int j = 0; j <= t; j++) pt[j] = TensorPrimitives.Dot(qh, new ReadOnlySpan<float>(k + (long)j * g.KvDim + kvOff, hd)) * scale;
                    Kernels.Softmax(pt);
                    double rowDot = 0;
                    for (int j = 0; j <= t; j++)
                    {
                        dp[j] = TensorPrimitives.Dot(doh, new ReadOnlySpan<float>(v + (long)j * g.KvDim + kvOff, hd));
                        rowDot += (double)pt[j] * dp[j];
                    }
                    float d = (float)rowDot;
                    var dq = new Span<float>(dQ + (long)t * g.QDim + h * hd, hd);
                    dq.Clear();
                    for (int j = 0; j <= t; j++)
                    {
                        float ds = pt[j] * (dp[j] - d) * scale;
                        TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(k + (long)j * g.KvDim + kvOff, hd), ds, dq, dq);
                        var dkj = new Span<float>(dkh + (long)j * hd, hd);
                        TensorPrimitives.MultiplyAdd(qh, ds, dkj, dkj);
                        var dvj = new Span<float>(dvh + (long)j * hd, hd);
                        TensorPrimitives.MultiplyAdd(doh, pt[j], dvj, dvj);
                    }
                }
            }
        }
    }
}
