using System.Numerics;
using System.Numerics.Tensors;
using Kvq.Tensors;

namespace Kvq.Calibration.Fisher;

/// <summary>
/// Causal softmax attention over one window of tokens at positions 0..T-1, in f32, with grouped KV heads: query head
/// h reads KV head h / (heads / kvHeads); scores are scaled by 1/sqrt(headDim). Queries and keys come in already
/// rotated. Forward computes what <see cref="Cache.DenseF32Sequence"/> computes (same softmax; dot products summed in another
/// order, so results agree to f32 rounding).
/// Layouts are token-major: q, o (T, heads*headDim); k, v (T, kvHeads*headDim).
/// </summary>
public static unsafe class CausalAttention
{
    public static void Forward(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, Span<float> o,
        int tokens, int heads, int kvHeads, int headDim, Parallelism par, int window = 0, float softCap = 0)
    {
        var g = new Geometry(tokens, heads, kvHeads, headDim, window, softCap);
        g.Check(q.Length, k.Length, v.Length, o.Length);
        fixed (float* pq = q)
        fixed (float* pk = k)
        fixed (float* pv = v)
        fixed (float* po = o)
        {
            var job = new ForwardJob(g, pq, pk, pv, po);
            par.For(heads * ((tokens + QueryBlock - 1) / QueryBlock), 1, ref job);
        }
    }

    /// <summary>
    /// Writes the gradients dQ (T, heads*headDim), dK and dV (T, kvHeads*headDim) of the loss given dO, the gradient of
    /// the attention output. Probabilities are recomputed a block of queries at a time (nothing of size T^2 is
    /// stored); per query head,
    /// P = softmax(S), dP = dO V^T, dS = P (dP - rowsum(P dP)), dQ = scale dS K, dK = scale dS^T Q, dV = P^T dO.
    /// A KV head's gradient sums the gradients of its query heads.
    /// </summary>
    public static void Backward(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, ReadOnlySpan<float> dO,
        Span<float> dQ, Span<float> dK, Span<float> dV, int tokens, int heads, int kvHeads, int headDim, Parallelism par, int window = 0,
        float softCap = 0)
    {
        var g = new Geometry(tokens, heads, kvHeads, headDim, window, softCap);
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

    /// <summary>Window: a query at t sees keys t-Window+1..t (sliding-window layers); 0: all keys up to t. SoftCap: scores
    /// become cap * tanh(score / cap) before the softmax (Gemma 2; its backward multiplies by 1 - tanh^2); 0: none.</summary>
    private readonly record struct Geometry(int Tokens, int Heads, int KvHeads, int HeadDim, int Window = 0, float SoftCap = 0)
    {
        public float Cap(float score) => SoftCap > 0 ? SoftCap * MathF.Tanh(score / SoftCap) : score;

        /// <summary>Key j is outside query t's sliding window (its score becomes -inf, its probability 0).</summary>
        public bool Hidden(int t, int j) => Window > 0 && j <= t - Window;

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

    /// <summary>
    /// Queries handled together: each key and value row is read once per block (not once per query), which is what
    /// keeps a long window out of main memory. Per-block score rows are (QueryBlock, T) f32.
    /// </summary>
    private const int QueryBlock = 16;

    private readonly struct ForwardJob(Geometry g, float* q, float* k, float* v, float* o) : IRangeJob
    {
        // Items are (head, query block) pairs.
        public void Run(int start, int end)
        {
            int hd = g.HeadDim, n = g.Tokens, blocks = (n + QueryBlock - 1) / QueryBlock;
            var scores = new float[QueryBlock * n];
            fixed (float* s = scores)
            {
                for (int item = start; item < end; item++)
                {
                    int h = item / blocks, t0 = item % blocks * QueryBlock, t1 = Math.Min(n, t0 + QueryBlock);
                    int kvOff = h / g.Group * hd;
                    float* qh = q + h * hd;      // query t at qh + t * QDim
                    float* oh = o + h * hd;
                    for (int j = 0; j < t1; j++)
                    {
                        float* kj = k + (long)j * g.KvDim + kvOff;
                        for (int t = Math.Max(t0, j); t < t1; t++)
                            s[(t - t0) * n + j] = g.Hidden(t, j) ? float.NegativeInfinity : g.Cap(Dot(qh + (long)t * g.QDim, kj, hd) * g.Scale);
                    }
                    for (int t = t0; t < t1; t++)
                    {
                        Kernels.Softmax(new Span<float>(s + (t - t0) * n, t + 1));
                        new Span<float>(oh + (long)t * g.QDim, hd).Clear();
                    }
                    for (int j = 0; j < t1; j++)
                    {
                        float* vj = v + (long)j * g.KvDim + kvOff;
                        for (int t = Math.Max(t0, j); t < t1; t++) Axpy(oh + (long)t * g.QDim, vj, s[(t - t0) * n + j], hd);
                    }
                }
            }
        }
    }

    private readonly struct BackwardJob(Geometry g, float* q, float* k, float* v, float* dO, float* dQ, float* dKh, float* dVh) : IRangeJob
    {
        // Items are query heads; each owns its (T, headDim) slices of dKh and dVh.
        public void Run(int start, int end)
        {
            int hd = g.HeadDim, n = g.Tokens;
            float scale = g.Scale;
            var pBuf = new float[QueryBlock * n];    // P of the block's queries
            var sBuf = new float[QueryBlock * n];    // dP, then dS in place
            var cBuf = new float[g.SoftCap > 0 ? QueryBlock * n : 1];  // soft-capped scores / cap (tanh), for its derivative
            fixed (float* p = pBuf)
            fixed (float* ds = sBuf)
            fixed (float* th = cBuf)
            {
                for (int h = start; h < end; h++)
                {
                    int kvOff = h / g.Group * hd;
                    float* qh = q + h * hd, doh = dO + h * hd, dqh = dQ + h * hd;
                    float* dkh = dKh + (long)h * n * hd;
                    float* dvh = dVh + (long)h * n * hd;
                    new Span<float>(dkh, n * hd).Clear();
                    new Span<float>(dvh, n * hd).Clear();
                    for (int t0 = 0; t0 < n; t0 += QueryBlock)
                    {
                        int t1 = Math.Min(n, t0 + QueryBlock);
                        for (int j = 0; j < t1; j++)
                        {
                            long at = (long)j * g.KvDim + kvOff;
                            for (int t = Math.Max(t0, j); t < t1; t++)
                            {
                                int b = (t - t0) * n + j;
                                TwoDots(qh + (long)t * g.QDim, k + at, doh + (long)t * g.QDim, v + at, hd, out float sc, out ds[b]);
                                p[b] = g.Hidden(t, j) ? float.NegativeInfinity : g.Cap(sc * scale);
                                if (g.SoftCap > 0) th[b] = g.Hidden(t, j) ? 0f : p[b] / g.SoftCap;   // hidden: P = 0, and no inf * 0
                            }
                        }
                        for (int t = t0; t < t1; t++)
                        {
                            var pt = new Span<float>(p + (t - t0) * n, t + 1);
                            var dst = new Span<float>(ds + (t - t0) * n, t + 1);
                            Kernels.Softmax(pt);
                            double rowDot = 0;
                            for (int j = 0; j <= t; j++) rowDot += (double)pt[j] * dst[j];
                            float d = (float)rowDot;
                            if (g.SoftCap > 0)
                            {
                                var tt = new Span<float>(th + (t - t0) * n, t + 1);
                                for (int j = 0; j <= t; j++) dst[j] = pt[j] * (dst[j] - d) * (1f - tt[j] * tt[j]) * scale;
                            }
                            else
                                for (int j = 0; j <= t; j++) dst[j] = pt[j] * (dst[j] - d) * scale;
                            new Span<float>(dqh + (long)t * g.QDim, hd).Clear();
                        }
                        for (int j = 0; j < t1; j++)
                        {
                            int first = Math.Max(t0, j);
                            KeyStep(g, k + (long)j * g.KvDim + kvOff, dkh + (long)j * hd, dvh + (long)j * hd, qh, doh, dqh,
                                first, t1, p + (first - t0) * n + j, ds + (first - t0) * n + j, n);
                        }
                    }
                }
            }
        }
    }

    /// <summary>
    /// Key j's share of the backward for queries [first, last): dk += sum_t dS[t] q_t and dv += sum_t P[t] dO_t (held in
    /// registers across the queries), dq_t += dS[t] k. P and dS advance by <paramref name="stride"/> per query.
    /// </summary>
    private static void KeyStep(Geometry g, float* kj, float* dk, float* dv, float* q, float* dO, float* dq,
        int first, int last, float* p, float* ds, int stride)
    {
        int hd = g.HeadDim, lanes = Vector<float>.Count, i = 0;
        for (; i + lanes <= hd; i += lanes)
        {
            var accK = Vector.Load(dk + i);
            var accV = Vector.Load(dv + i);
            var kv = Vector.Load(kj + i);
            for (int t = first, b = 0; t < last; t++, b += stride)
            {
                long row = (long)t * g.QDim + i;
                var vds = new Vector<float>(ds[b]);
                accK = Vector.FusedMultiplyAdd(Vector.Load(q + row), vds, accK);
                accV = Vector.FusedMultiplyAdd(Vector.Load(dO + row), new Vector<float>(p[b]), accV);
                Vector.FusedMultiplyAdd(kv, vds, Vector.Load(dq + row)).Store(dq + row);
            }
            accK.Store(dk + i);
            accV.Store(dv + i);
        }
        for (; i < hd; i++)
        {
            for (int t = first, b = 0; t < last; t++, b += stride)
            {
                long row = (long)t * g.QDim + i;
                dk[i] += ds[b] * q[row];
                dv[i] += p[b] * dO[row];
                dq[row] += ds[b] * kj[i];
            }
        }
    }

    // Kernels over one head vector (n = headDim floats, typically 64 or 128): plain Vector<float> loops, inlined, so
    // that a (query, key) pair costs a few FMAs and no call or span set-up.

    private static float Dot(float* a, float* b, int n)
    {
        int i = 0, lanes = Vector<float>.Count;
        var acc0 = Vector<float>.Zero;
        var acc1 = Vector<float>.Zero;
        for (; i + 2 * lanes <= n; i += 2 * lanes)
        {
            acc0 = Vector.FusedMultiplyAdd(Vector.Load(a + i), Vector.Load(b + i), acc0);
            acc1 = Vector.FusedMultiplyAdd(Vector.Load(a + i + lanes), Vector.Load(b + i + lanes), acc1);
        }
        for (; i + lanes <= n; i += lanes) acc0 = Vector.FusedMultiplyAdd(Vector.Load(a + i), Vector.Load(b + i), acc0);
        float sum = Vector.Sum(acc0 + acc1);
        for (; i < n; i++) sum += a[i] * b[i];
        return sum;
    }

    /// <summary>s = q . k and dp = dO . v in one pass.</summary>
    private static void TwoDots(float* q, float* k, float* dO, float* v, int n, out float s, out float dp)
    {
        int i = 0, lanes = Vector<float>.Count;
        var accS = Vector<float>.Zero;
        var accP = Vector<float>.Zero;
        for (; i + lanes <= n; i += lanes)
        {
            accS = Vector.FusedMultiplyAdd(Vector.Load(q + i), Vector.Load(k + i), accS);
            accP = Vector.FusedMultiplyAdd(Vector.Load(dO + i), Vector.Load(v + i), accP);
        }
        s = Vector.Sum(accS);
        dp = Vector.Sum(accP);
        for (; i < n; i++)
        {
            s += q[i] * k[i];
            dp += dO[i] * v[i];
        }
    }

    /// <summary>y += a x.</summary>
    private static void Axpy(float* y, float* x, float a, int n)
    {
        int i = 0, lanes = Vector<float>.Count;
        var va = new Vector<float>(a);
        for (; i + lanes <= n; i += lanes) Vector.FusedMultiplyAdd(Vector.Load(x + i), va, Vector.Load(y + i)).Store(y + i);
        for (; i < n; i++) y[i] += a * x[i];
    }
}
