namespace Kvq.Cache.Codecs;

/// <summary>Bytes of an encoded region, by what they hold. Sums exactly to the bytes allocated for it.</summary>
public readonly record struct KvBytes(long Codes, long Scales, long Zeros, long Outliers, long Indices, long Residual)
{
    public long Total => Codes + Scales + Zeros + Outliers + Indices + Residual;

    public static KvBytes operator +(KvBytes a, KvBytes b) => new(a.Codes + b.Codes, a.Scales + b.Scales, a.Zeros + b.Zeros,
        a.Outliers + b.Outliers, a.Indices + b.Indices, a.Residual + b.Residual);

    public static KvBytes operator *(KvBytes a, long n) => new(a.Codes * n, a.Scales * n, a.Zeros * n, a.Outliers * n,
        a.Indices * n, a.Residual * n);

    public static KvBytes CodesOnly(long n) => new(n, 0, 0, 0, 0, 0);
}
