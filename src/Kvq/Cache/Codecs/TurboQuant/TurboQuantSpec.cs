using System.Globalization;

namespace Kvq.Cache.Codecs.TurboQuant;

/// <summary>
/// A parsed TurboQuant-style spec: <c>tqB</c> or <c>tqB.5</c> (B in 2..4: bits per value of the codes; .5 = the first
/// half of the rotated channels one bit wider), optionally <c>:qjl</c> (keys: one bit of every channel goes to the QJL
/// residual sketch instead of the codebook; values ignore it, as in TurboQuant). Calibration-free: a random rotation
/// seeded per (side, layer, KV head) and a codebook that depends only on the head dim.
/// </summary>
public sealed record TurboQuantSpec(string Name, double Bits, bool Qjl) : KvCodecSpec(Name)
{
    public const string Prefix = "tq";

    public override KvCodec Create(KvCodecContext context) => TurboQuantCodecs.Create(this, context);

    /// <summary>Code bits of each of <paramref name="headDim"/> channels on <paramref name="side"/>.</summary>
    public int[] Widths(int headDim, KvSide side)
    {
        int low = (int)Math.Floor(Bits);
        bool half = Bits != low;
        int qjl = Qjl && side == KvSide.Key ? 1 : 0;
        var w = new int[headDim];
        for (int c = 0; c < headDim; c++) w[c] = low + (half && c < headDim / 2 ? 1 : 0) - qjl;
        return w;
    }

    /// <summary>Null when the name is not of the family; throws on a malformed one.</summary>
    public static TurboQuantSpec? TryParse(string name)
    {
        if (name.Length <= Prefix.Length || !name.StartsWith(Prefix, StringComparison.Ordinal) || !char.IsAsciiDigit(name[Prefix.Length]))
            return null;
        var parts = name.Split(':');
        var bitsText = parts[0][Prefix.Length..];
        if (!double.TryParse(bitsText, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double bits)
            || bits < 2 || bits > 4 || bits * 2 != Math.Floor(bits * 2))
            throw new KvSpecException($"'{name}': expected tq2, tq2.5, tq3, tq3.5 or tq4 (bits per value of the codes)");
        bool qjl = false;
        for (int i = 1; i < parts.Length; i++)
        {
            if (parts[i] == "qjl") qjl = true;
            else throw new KvSpecException($"'{name}': unknown modifier '{parts[i]}' (tq takes ':qjl', the 1-bit residual sketch on keys)");
        }
        return new TurboQuantSpec(name, bits, qjl);
    }
}
