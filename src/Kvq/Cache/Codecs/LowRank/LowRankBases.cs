using Kvq.Cache.Codecs.KvQuant;

namespace Kvq.Cache.Codecs.LowRank;

/// <summary>
/// Principal bases for every (side, layer, KV head) of a model, fitted on calibration activations (pre-RoPE keys,
/// values). One basis per KV head rather than one per layer shared by its heads: the cache stores each head apart
/// anyway, a per-layer basis is only a constrained special case (more error at the same rank), and a basis costs
/// HeadDim^2 floats (16 KB at head dim 64), nothing next to the cache.
/// </summary>
public sealed class LowRankBases
{
    public int Layers { get; }
    public int KvHeads { get; }
    public int HeadDim { get; }
    /// <summary>Calibration vectors per (layer, head) the covariances were estimated from.</summary>
    public long Tokens { get; }
    /// <summary>KVQuant calibrations of the keys' rank-R latent (principal basis, no Hadamard rotation), by rank:
    /// per-channel scales and codebooks for lrR+nuq* (<c>kvq calibrate --lowrank-nuq R</c>).</summary>
    public IReadOnlyList<(int Rank, IReadOnlyList<KvQuantCalibration> Calibrations)> Latent { get; }
    private readonly LowRankBasis[] _keys, _values; // (layer, head) order

    public LowRankBases(int layers, int kvHeads, int headDim, long tokens, LowRankBasis[] keys, LowRankBasis[] values,
        IReadOnlyList<(int Rank, IReadOnlyList<KvQuantCalibration> Calibrations)>? latent = null)
    {
        latent ??= [];
        foreach (var (rank, cals) in latent)
        {
            if (rank < 1 || rank > headDim) throw new ArgumentException($"latent calibration of rank {rank} for head dim {headDim}");
            if (cals.Count == 0) throw new ArgumentException($"latent calibration of rank {rank} is empty");
            foreach (var c in cals)
                if (c.KeysPreRope.Layers != layers || c.KeysPreRope.KvHeads != kvHeads || c.KeysPreRope.HeadDim != rank)
                    throw new ArgumentException($"latent calibration of rank {rank} has scales ({c.KeysPreRope.Layers}, {c.KeysPreRope.KvHeads}, {c.KeysPreRope.HeadDim})");
        }
        if (latent.Select(e => e.Rank).Distinct().Count() != latent.Count) throw new ArgumentException("a latent rank appears twice");
        Latent = latent;
        if (layers < 1 || kvHeads < 1 || headDim < 1) throw new ArgumentException($"bases of {layers} layers x {kvHeads} heads x head dim {headDim}");
        if (tokens < 0) throw new ArgumentException($"{tokens} calibration tokens");
        foreach (var (all, side) in new[] { (keys, "key"), (values, "value") })
        {
            if (all.Length != layers * kvHeads) throw new ArgumentException($"{all.Length} {side} bases, expected {layers} x {kvHeads}");
            foreach (var b in all)
                if (b.HeadDim != headDim) throw new ArgumentException($"a {side} basis has head dim {b.HeadDim}, expected {headDim}");
        }
        Layers = layers;
        KvHeads = kvHeads;
        HeadDim = headDim;
        Tokens = tokens;
        _keys = keys;
        _values = values;
    }

    public LowRankBasis For(KvSide side, int layer, int head)
    {
        if ((uint)layer >= (uint)Layers || (uint)head >= (uint)KvHeads)
            throw new ArgumentOutOfRangeException(nameof(layer), $"layer {layer}, head {head} of {Layers} x {KvHeads}");
        return (side == KvSide.Key ? _keys : _values)[layer * KvHeads + head];
    }

    /// <summary>The same bases with these latent calibrations.</summary>
    public LowRankBases WithLatent(IReadOnlyList<(int Rank, IReadOnlyList<KvQuantCalibration> Calibrations)> latent) =>
        new(Layers, KvHeads, HeadDim, Tokens, _keys, _values, latent);

    /// <summary>The latent KVQuant calibrations of a rank, or null.</summary>
    public IReadOnlyList<KvQuantCalibration>? LatentCalibrations(int rank)
    {
        foreach (var (r, cals) in Latent)
            if (r == rank) return cals;
        return null;
    }

    /// <summary>Mean over heads and layers of the variance kept at a rank.</summary>
    public double MeanEnergy(KvSide side, int rank)
    {
        double sum = 0;
        foreach (var b in side == KvSide.Key ? _keys : _values) sum += b.Energy(rank);
        return sum / (Layers * KvHeads);
    }
}

/// <summary>A calibration profile that may carry low-rank bases (<c>kvq calibrate --lowrank</c>).</summary>
public interface ILowRankProfile : IKvProfile
{
    LowRankBases? LowRank { get; }

    /// <summary>A profile for the codec of the rank-R latent (head dim R), when the keys' latent was calibrated at that rank.</summary>
    IKvProfile? LatentProfile(int rank);
}
