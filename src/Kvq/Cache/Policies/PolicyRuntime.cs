using Kvq.Cache.Storage;

namespace Kvq.Cache.Policies;

/// <summary>What policies see and edit of one sequence's slots (<see cref="IPolicyEditor"/>), and the scratch reused by
/// every selection and observation pass (no allocation per decode step once grown).</summary>
internal sealed class PolicyRuntime(SequencePolicy s) : IPolicyEditor
{
    private readonly int[] _keep = new int[s.Kv.Shape.Layers];
    private bool[] _kept = [];
    private float[] _scratch = [], _scratch2 = [], _zeros = [], _keys = [], _values = [];
    private readonly float[][] _work = [[], [], [], []];
    public float[] Q = [], Rows = [], BlockScores = [], Tile = [];

    public int Layers => s.Kv.Shape.Layers;
    public int KvHeads => s.Kv.Shape.KvHeads;
    public int HeadDim => s.Kv.Shape.HeadDim;
    public int Length => s.Length;
    public int ChunkTokens => s.LastChunk;
    public bool KeysPreRope => s.Kv.Keys.Codec.PreRope;
    public int Count(int layer) => s.Count(layer);
    public int Keep(int layer) => _keep[layer];

    public int Sinks(int layer, int head) => Math.Min(s.Count(layer), Math.Max(s.SinkTokens, s.Policy.SinkTokens));

    public void BeginLayer(int layer, int keep) => _keep[layer] = keep;

    public Span<bool> Kept(int count)
    {
        if (_kept.Length < count) _kept = new bool[Math.Max(count, _kept.Length * 2)];
        return _kept.AsSpan(0, count);
    }

    public ReadOnlySpan<int> Positions(int layer, int head) => s.Slots.Positions(layer, Math.Max(0, head))[..s.Count(layer)];

    public ReadOnlySpan<float> Attention(int layer, int head) => s.Slots.HasAttention
        ? s.Slots.Attention(layer, Math.Max(0, head))[..s.Count(layer)] : Zeros(layer);

    public ReadOnlySpan<float> LogWeights(int layer, int head) => s.Slots.HasLogWeights
        ? s.Slots.LogWeights(layer, Math.Max(0, head))[..s.Count(layer)] : Zeros(layer);

    public ReadOnlySpan<float> Keys(int layer, int head) => Decode(s.Kv.Keys, layer, Math.Max(0, head), ref _keys);
    public ReadOnlySpan<float> Values(int layer, int head) => Decode(s.Kv.Values, layer, Math.Max(0, head), ref _values);

    public Span<float> Work(int id, int length) => Buffer(ref _work[id], length);
    public Span<float> Scratch(int layer) => Buffer(ref _scratch, s.Count(layer));
    public Span<float> Scratch2(int layer) => Buffer(ref _scratch2, s.Count(layer));

    public void Rewrite(int layer, int head, int slot, ReadOnlySpan<float> key, ReadOnlySpan<float> value, float logWeight, float attention)
    {
        if ((uint)slot >= (uint)s.Count(layer)) throw new ArgumentOutOfRangeException(nameof(slot), $"layer {layer} holds {s.Count(layer)} slots");
        if (slot < Sinks(layer, head)) throw new InvalidOperationException($"slot {slot} of layer {layer} is a sink and cannot be rewritten");
        int bt = s.Kv.BlockTokens;
        int block = s.Slots.Blocks(layer)[slot / bt];
        s.Kv.Keys.Codecs[layer][head].EncodeToken(key, s.Kv.Keys.Block(layer, block, head), s.Kv.Keys.Outliers(layer, block, head), slot % bt);
        s.Kv.Values.Codecs[layer][head].EncodeToken(value, s.Kv.Values.Block(layer, block, head), s.Kv.Values.Outliers(layer, block, head),
            slot % bt);
        if (s.Slots.HasLogWeights) s.Slots.LogWeights(layer, head)[slot] = logWeight;
        if (s.Slots.HasAttention) s.Slots.Attention(layer, head)[slot] = attention;
    }

    public void EnsureObserve(int rows, int count, int bt, int hd)
    {
        Buffer(ref Q, rows * hd);
        Buffer(ref Rows, rows * count);
        Buffer(ref BlockScores, rows * bt);
        Buffer(ref Tile, bt * hd);
    }

    private ReadOnlySpan<float> Zeros(int layer)
    {
        var z = Buffer(ref _zeros, s.Count(layer));
        z.Clear();
        return z;
    }

    /// <summary>Every slot of one head decoded as stored (sink rows from their exact copies).</summary>
    private ReadOnlySpan<float> Decode(KvSideStore side, int layer, int head, ref float[] buffer)
    {
        int count = s.Count(layer), hd = s.Kv.Shape.HeadDim, bt = s.Kv.BlockTokens;
        var dst = Buffer(ref buffer, count * hd);
        var blocks = s.Slots.Blocks(layer);
        for (int s0 = 0; s0 < count; s0 += bt)
        {
            int cnt = Math.Min(bt, count - s0);
            side.ReadTile(layer, head, s0, cnt, blocks[s0 / bt], dst.Slice(s0 * hd, cnt * hd));
        }
        return dst;
    }

    private static Span<float> Buffer(ref float[] a, int n)
    {
        if (a.Length < n) a = new float[Math.Max(n, a.Length * 2)];
        return a.AsSpan(0, n);
    }
}
