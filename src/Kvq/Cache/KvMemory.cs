using Kvq.Cache.Codecs;

namespace Kvq.Cache;

/// <summary>Bytes a sequence's cache holds, by kind, with bits per stored value derived from them.</summary>
public sealed record KvMemory(KvBytes Keys, KvBytes Values, long StagingBytes, int Tokens, int ValuesPerTokenPerSide)
{
    public long TotalBytes => Keys.Total + Values.Total + StagingBytes;
    public double BytesPerToken => Tokens == 0 ? 0 : (double)TotalBytes / Tokens;
    /// <summary>Stored bits per K or V element over the tokens held (partial blocks and staging count against it).</summary>
    public double BitsPerElement => Tokens == 0 ? 0 : TotalBytes * 8.0 / (2.0 * Tokens * ValuesPerTokenPerSide);
}
