using System.Numerics.Tensors;
using Kvq.Tensors;

namespace Kvq.Cache;

/// <summary>
/// The plain cache: f32 keys (RoPE applied on append) and values in growable per-layer arrays, attention in f32.
/// It is the reference every encoded cache is compared with, and the simplest thing that runs a model.
/// </summary>
public sealed class DenseF32Sequence : IKvSequence
{
    private readonly KvShape _shape;
    private readonly float[][] _k;     // per layer: (kvHeads, capacity, headDim) post-RoPE
    private readonly float[][] _v;     // per layer: (kvHeads, capacity, headDim)
    private readonly int[] _count;     // per layer: tokens stored
    private int _capacity;

    public int Length { get; private set; }
    public long BytesAllocated => 2L * _shape.Layers * _shape.KvDim * _capacity * sizeof(float);

    public DenseF32Sequence(KvShape shape, int initialCapacity = 256)
    {
        _shape = shape;
        _capacity = Math.Max(1, initialCapacity);
        _k = new float[shape.Layers][];
        _v = new float[shape.Layers][];
        _count = new int[shape.Layers];
        for (int l = 0; l < shape.Layers; l++)
        {
            _k[l] = new float[shape.KvDim * _capacity];
            _v[l] = new float[shape.KvDim * _capacity];
        }
    }

    public void BeginChunk(ReadOnlySpan<int> tokens) { }

    public void Append(int layer, ReadOnlySpan<float> k, ReadOnlySpan<float> v, int n)
    {
        int hd = _shape.HeadDim;
        int start = _count[layer];
        EnsureCapacity(start + n);
        var kl = _k[layer];
        var vl = _v[layer];
        var rope = _shape.RopeOf(layer);
        Span<float> cos = stackalloc float[rope.RopeDims / 2];
        Span<float> sin = stackalloc float[rope.RopeDims / 2];
        for (int t = 0; t < n; t++)
        {
            int pos = start + t;
            rope.Angles(pos, cos, sin);
            for (int h = 0; h < _shape.KvHeads; h++)
            {
                var dstK = kl.AsSpan((h * _capacity + pos) * hd, hd);
                k.Slice(t * _shape.KvDim + h * hd, hd).CopyTo(dstK);
                rope.Rotate(dstK, cos, sin);
                v.Slice(t * _shape.KvDim + h * hd, hd).CopyTo(vl.AsSpan((h * _capacity + pos) * hd, hd));
            }
        }
        _count[layer] = start + n;
    }

    public void Attend(int layer, ReadOnlySpan<float> q, int n, Span<float> output, Parallelism par)
    {
        unsafe
        {
            fixed (float* pq = q)
            fixed (float* po = output)
            {
                var job = new AttendJob(this, layer, pq, po, n);
                par.For(n * _shape.Heads, 1, ref job);
            }
        }
    }

    public void Commit(int n) => Length += n;

    private unsafe readonly struct AttendJob(DenseF32Sequence s, int layer, float* q, float* o, int n) : IRangeJob
    {
        public void Run(int start, int end)
        {
            var shape = s._shape;
            int hd = shape.HeadDim;
            int stored = s._count[layer];
            var scores = new float[stored];
            for (int item = start; item < end; item++)
            {
                int t = item / shape.Heads, h = item % shape.Heads;
                int kvh = h / shape.GroupSize;
                int visible = stored - n + t + 1;
                int window = shape.WindowOf(layer);
                int first = window > 0 ? Math.Max(0, visible - window) : 0; // sliding window: the latest `window` tokens
                var qh = new ReadOnlySpan<float>(q + (long)t * shape.QDim + h * hd, hd);
                var kh = s._k[layer].AsSpan(kvh * s._capacity * hd);
                var vh = s._v[layer].AsSpan(kvh * s._capacity * hd);
                var sc = scores.AsSpan(0, visible - first);
                for (int j = first; j < visible; j++) sc[j - first] = TensorPrimitives.Dot(qh, kh.Slice(j * hd, hd)) * shape.ScoreScale;
                Kernels.SoftCap(sc, shape.AttnSoftCap);
                Kernels.Softmax(sc);
                var oh = new Span<float>(o + (long)t * shape.QDim + h * hd, hd);
                oh.Clear();
                for (int j = first; j < visible; j++)
                    TensorPrimitives.MultiplyAdd(vh.Slice(j * hd, hd), sc[j - first], oh, oh);
            }
        }
    }

    private void EnsureCapacity(int needed)
    {
        if (needed <= _capacity) return;
        int newCap = Math.Max(needed, _capacity * 2);
        int hd = _shape.HeadDim;
        for (int l = 0; l < _shape.Layers; l++)
        {
            _k[l] = Grow(_k[l], newCap, hd);
            _v[l] = Grow(_v[l], newCap, hd);
        }
        _capacity = newCap;
    }

    private float[] Grow(float[] old, int newCap, int hd)
    {
        var a = new float[_shape.KvHeads * newCap * hd];
        for (int h = 0; h < _shape.KvHeads; h++)
            old.AsSpan(h * _capacity * hd, _capacity * hd).CopyTo(a.AsSpan(h * newCap * hd));
        return a;
    }
}
