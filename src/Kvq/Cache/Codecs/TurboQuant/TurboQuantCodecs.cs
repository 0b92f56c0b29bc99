using System.Runtime.CompilerServices;
using Kvq.Cache.Codecs.Rotation;

namespace Kvq.Cache.Codecs.TurboQuant;

/// <summary>
/// The TurboQuant family in the codec registry (<see cref="TurboQuantSpec"/>): a random rotation (Walsh-Hadamard after
/// random signs, seeded per side, layer and KV head) in front of <see cref="TurboQuantCodec"/>.
/// </summary>
public static class TurboQuantCodecs
{
    private static int _registered;

#pragma warning disable CA2255 // The registry has no other hook for codec families that live in their own folder.
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void RegisterOnLoad() => Register();

    public static void Register()
    {
        if (Interlocked.Exchange(ref _registered, 1) != 0) return;
        KvCodecRegistry.Register(new KvFormat("tq3",
            "TurboQuant-style, calibration-free: random rotation, 3-bit Lloyd-Max codebook of the rotated coordinates, f16 norm per vector; tqB / tqB.5, B in 2..4",
            TurboQuantSpec.TryParse), TurboQuantSpec.Prefix);
        KvCodecRegistry.Register(new KvFormat("tq2.5",
            "TurboQuant-style: half of the rotated channels at 3 bits, half at 2", TurboQuantSpec.TryParse));
        KvCodecRegistry.Register(new KvFormat("tq3:qjl",
            "TurboQuant-style: keys with a 2-bit codebook plus TurboQuant's 1-bit QJL residual sketch (unbiased q.k), values 3-bit", TurboQuantSpec.TryParse));
    }

    public static RotatedCodec Create(TurboQuantSpec spec, KvCodecContext ctx)
    {
        int d = ctx.HeadDim;
        int seed = 0x70B0 + 7919 * ctx.Layer + 104729 * ctx.KvHead + (ctx.Side == KvSide.Key ? 0 : 1);
        var rng = new Random(seed);
        var signs = new float[d];
        for (int c = 0; c < d; c++) signs[c] = rng.Next(2) == 0 ? -1f : 1f;
        float[]? s = null;
        if (spec.Qjl && ctx.Side == KvSide.Key)
        {
            s = new float[d * d];
            for (int i = 0; i < s.Length; i++)
            {
                double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
                s[i] = (float)(Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
            }
        }
        var inner = new TurboQuantCodec(spec.Name, ctx.BlockTokens, d, spec.Widths(d, ctx.Side), s);
        return new RotatedCodec(spec.Name, inner, signs);
    }
}
