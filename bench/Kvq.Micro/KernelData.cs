using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Calibration;
using Kvq.Calibration.KvQuant;
using Kvq.Tensors;

namespace Kvq.Micro;

/// <summary>
/// One KV head's cache filled through a codec: books-19m's shape (head dim 64, GQA group 3, normal RoPE), blocks
/// of 32 tokens, activations shaped like real keys/values (per-channel offsets, heavy tails) and, for the KVQuant
/// codecs, a profile fitted on them (1% outliers).
/// </summary>
public sealed class KernelData
{
    public const int HeadDim = 64, BlockTokens = 32;
    public readonly KvCodec Codec;
    public readonly byte[][] Blocks;
    /// <summary>Each block's sparse rows (KVQuant's exact outliers), null entries for formats without them.</summary>
    public readonly BlockOutliers?[] Outliers;
    public readonly int[] Positions;
    public readonly Rope Rope = new(HeadDim, HeadDim, 10000f, 1f, RopeStyle.Normal);

    private static KvQuantProfile? _profile;

    public KernelData(string spec, KvSide side, int tokens, int seed = 1)
    {
        var shape = new KvShape(1, 1, 3, HeadDim, Rope);
        var cfg = KvCacheConfig.Parse(spec, BlockTokens);
        if (KvQuantSpec.TryParse(spec) != null) cfg = cfg with { Profile = _profile ??= Profile(shape) };
        Codec = cfg.CreateCodec(side, 0, 0, HeadDim);
        // Channel statistics as the profile saw them (keys 1, values 6), tokens from this seed: the profile fits the data
        // as a calibrated profile fits a model's (~1% exact outliers), rather than a different set of channel offsets.
        var x = Activations(tokens, HeadDim, seed, side == KvSide.Key ? 1 : 6);
        int blocks = (tokens + BlockTokens - 1) / BlockTokens;
        Blocks = new byte[blocks][];
        Outliers = new BlockOutliers?[blocks];
        for (int b = 0; b < blocks; b++)
        {
            Blocks[b] = new byte[Codec.BlockBytes];
            var o = Outliers[b] = Codec.HasBlockOutliers ? new BlockOutliers() : null;
            var full = new float[BlockTokens * HeadDim];
            int n = Math.Min(BlockTokens, tokens - b * BlockTokens);
            x.AsSpan(b * BlockTokens * HeadDim, n * HeadDim).CopyTo(full);
            if (Codec.EncodesWholeBlocks) Codec.EncodeBlock(full, Blocks[b], o);
            else for (int t = 0; t < n; t++) Codec.EncodeToken(full.AsSpan(t * HeadDim, HeadDim), Blocks[b], o, t);
        }
        Positions = new int[blocks * BlockTokens];
        for (int i = 0; i < Positions.Length; i++) Positions[i] = i;
    }

    /// <summary>Tokens from <paramref name="seed"/>; per-channel offsets and spreads from <paramref name="channelSeed"/>.</summary>
    public static float[] Activations(int tokens, int width, int seed, int channelSeed)
    {
        var rng = new Random(channelSeed);
        var offset = new float[width];
        var spread = new float[width];
        for (int c = 0; c < width; c++)
        {
            offset[c] = c % 7 == 0 ? 3f + (float)rng.NextDouble() * 2 : (float)(rng.NextDouble() - 0.5);
            spread[c] = 0.2f + (float)rng.NextDouble() * (c % 5 == 0 ? 4f : 1f);
        }
        var x = new float[tokens * width];
        rng = new Random(seed * 7919 + 13);
        for (int t = 0; t < tokens; t++)
            for (int c = 0; c < width; c++)
            {
                double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
                double g = Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
                if (rng.NextDouble() < 0.01) g *= 6;
                x[t * width + c] = offset[c] + spread[c] * (float)g;
            }
        return x;
    }

    private static KvQuantProfile Profile(KvShape shape)
    {
        const int tokens = 2000;
        var positions = new int[tokens];
        for (int t = 0; t < tokens; t++) positions[t] = 1 + t % 511;
        var acts = new KvActivations(shape, positions, [Activations(tokens, shape.KvDim, 1, 1)], [Activations(tokens, shape.KvDim, 6, 6)]);
        var cals = KvQuantFitter.Fit(acts, new KvQuantFitOptions([0.01], Seed: 7, Threads: 1, Bins: 4096, Restarts: 1));
        var settings = new KvQuantCalibrationSettings("synthetic", new string('0', 64), 1, tokens, 1, 7, false);
        return new KvQuantProfile("micro", settings, 1, 1, HeadDim, cals);
    }
}
