using BenchmarkDotNet.Attributes;
using Kvq.Cache.Codecs;

namespace Kvq.Micro;

/// <summary>
/// Attention's two per-block kernels over one KV head's 4000-token cache (125 blocks), as decode (3 query rows = one
/// GQA group) and prefill (48 rows = 16 tokens x 3) call them: key scores (pre-RoPE codecs rotate at each position)
/// and value accumulation. Divide by 4000 for ns per cached token.
/// </summary>
[MemoryDiagnoser(false)]
public class AttentionKernels
{
    [Params("f16", "q8_0", "q4_0", "kivi4", "nuq4-1%", "nuq3-1%", "nuq2-1%")]
    public string Spec { get; set; } = "f16";

    [Params(3, 48)]
    public int Rows { get; set; }

    public const int Tokens = 4000;
    // "spec@tile": the base class's path (DecodeBlock, Rope.RotateAt, TileMath), for before/after comparisons.
    private bool Tile => Spec.EndsWith("@tile");
    private string Codec => Tile ? Spec[..^5] : Spec;
    private KernelData _keys = null!, _values = null!;
    private float[] _q = null!, _w = null!, _scores = null!, _acc = null!, _tile = null!;

    [GlobalSetup]
    public void Setup()
    {
        _keys = new KernelData(Codec, KvSide.Key, Tokens, 11);
        _values = new KernelData(Codec, KvSide.Value, Tokens, 12);
        var rng = new Random(3);
        _q = new float[Rows * KernelData.HeadDim];
        for (int i = 0; i < _q.Length; i++) _q[i] = (float)(rng.NextDouble() - 0.5);
        _w = new float[Rows * KernelData.BlockTokens];
        for (int i = 0; i < _w.Length; i++) _w[i] = (float)rng.NextDouble() / 32;
        _scores = new float[Rows * KernelData.BlockTokens];
        _acc = new float[Rows * KernelData.HeadDim];
        _tile = new float[KernelData.BlockTokens * KernelData.HeadDim];
    }

    /// <summary>Sparse outlier entries per cached token (keys, values).</summary>
    public (double Keys, double Values) OutliersPerToken =>
        (_keys.Outliers.Sum(o => o?.Count ?? 0) / (double)Tokens, _values.Outliers.Sum(o => o?.Count ?? 0) / (double)Tokens);

    [Benchmark]
    public float Scores()
    {
        var c = _keys.Codec;
        int bt = KernelData.BlockTokens;
        for (int b = 0; b < _keys.Blocks.Length; b++)
        {
            int n = Math.Min(bt, Tokens - b * bt);
            if (Tile)
            {
                var t = _tile.AsSpan(0, n * KernelData.HeadDim);
                c.DecodeBlock(_keys.Blocks[b], _keys.Outliers[b], n, t);
                if (c.PreRope) _keys.Rope.RotateAt(t, n, _keys.Positions.AsSpan(b * bt, n));
                Cache.Attention.TileMath.Scores(t, n, KernelData.HeadDim, _q, Rows, _scores);
            }
            else if (c.PreRope)
                c.ScoresPreRope(_keys.Blocks[b], _keys.Outliers[b], n, _keys.Positions.AsSpan(b * bt, n), _keys.Rope, _q, Rows, _scores, _tile);
            else c.Scores(_keys.Blocks[b], _keys.Outliers[b], n, _q, Rows, _scores, _tile);
        }
        return _scores[0];
    }

    [Benchmark]
    public float Accumulate()
    {
        var c = _values.Codec;
        int bt = KernelData.BlockTokens;
        for (int b = 0; b < _values.Blocks.Length; b++)
        {
            int n = Math.Min(bt, Tokens - b * bt);
            if (Tile)
            {
                var t = _tile.AsSpan(0, n * KernelData.HeadDim);
                c.DecodeBlock(_values.Blocks[b], _values.Outliers[b], n, t);
                Cache.Attention.TileMath.Accumulate(t, n, KernelData.HeadDim, _w.AsSpan(0, Rows * n), Rows, _acc);
            }
            else c.Accumulate(_values.Blocks[b], _values.Outliers[b], n, _w.AsSpan(0, Rows * n), Rows, _acc, _tile);
        }
        return _acc[0];
    }
}
