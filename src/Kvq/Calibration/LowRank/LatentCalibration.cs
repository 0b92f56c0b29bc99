using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cache.Codecs.LowRank;
using Kvq.Calibration.KvQuant;
using Kvq.Tensors;

namespace Kvq.Calibration.LowRank;

/// <summary>
/// KVQuant on the low-rank latent (lrR+nuq*): the calibration keys are projected exactly as the codec projects them
/// (principal basis of their layer and head, rank R) and KVQuant's fit runs on those R-dim vectors, giving per-channel
/// scales and codebooks of the latent. Unweighted: the Fisher information is kept per key element (squared
/// gradients), and the latent's would need the gradients themselves (g_latent = B g_key), which are not kept.
/// </summary>
public static class LatentCalibration
{
    /// <summary>The fitter also fits per-token streams, which set a token's outliers (one per tail) aside and scale
    /// the rest by their min and max: below 4 channels nothing is left to fit.</summary>
    public const int MinRank = 4;

    /// <summary>The keys' rank-R latents as activations of head dim R. The fitter wants values too: the latents stand
    /// in for them (the value codebooks it fits are never read).</summary>
    public static KvActivations Latents(KvActivations acts, LowRankBases bases, int rank)
    {
        var shape = acts.Shape;
        if (rank < 1 || rank > shape.HeadDim) throw new ArgumentOutOfRangeException(nameof(rank), $"rank {rank} for head dim {shape.HeadDim}");
        // RoPE of the latent shape only feeds the fitter's post-RoPE statistics, which the lr codec never uses.
        var latentShape = new KvShape(shape.Layers, shape.KvHeads, shape.Heads, rank,
            new Rope(rank, rank & ~1, shape.Rope.Base, shape.Rope.Scale, shape.Rope.Style));
        var keys = new float[shape.Layers][];
        var centered = new float[shape.HeadDim];
        for (int l = 0; l < shape.Layers; l++)
        {
            keys[l] = new float[acts.Tokens * latentShape.KvDim];
            for (int h = 0; h < shape.KvHeads; h++)
            {
                var p = bases.For(KvSide.Key, l, h).Projection(rank);
                for (int t = 0; t < acts.Tokens; t++)
                    p.Project(acts.Keys[l].AsSpan(t * shape.KvDim + h * shape.HeadDim, shape.HeadDim),
                        keys[l].AsSpan(t * latentShape.KvDim + h * rank, rank), centered);
            }
        }
        return new KvActivations(latentShape, acts.Positions, keys, keys);
    }

    /// <summary>Fits KVQuant on the latents of each rank and returns the bases carrying them.</summary>
    public static LowRankBases Fit(KvActivations acts, LowRankBases bases, IEnumerable<int> ranks, KvQuantFitOptions options,
        Action<int, int>? progress = null, CancellationToken cancel = default)
    {
        var list = new List<(int, IReadOnlyList<KvQuantCalibration>)>();
        var all = ranks.Distinct().Order().ToList();
        if (all.Count > 0 && all[0] < MinRank)
            throw new ArgumentOutOfRangeException(nameof(ranks), $"latent rank {all[0]}: KVQuant's fit needs at least {MinRank} channels");
        for (int i = 0; i < all.Count; i++)
        {
            var cals = KvQuantFitter.Fit(Latents(acts, bases, all[i]), options, null, cancel);
            list.Add((all[i], cals));
            progress?.Invoke(i + 1, all.Count);
        }
        return bases.WithLatent(list);
    }
}
