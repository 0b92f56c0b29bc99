namespace Kvq.Cache.Codecs;

/// <summary>
/// What a sequence's codecs stored in their blocks' sparse rows (<see cref="BlockOutliers"/>: KVQuant's exact
/// outliers) for the vectors it encoded: one side (keys or values) of one sequence, so sequences that run at the same
/// time keep their own counts; a measurement over several sequences adds theirs. Elements are values per vector in the
/// sparse rows' index space (<see cref="KvCodec.OutlierRowLength"/>).
/// </summary>
public readonly record struct KvOutlierCounts(long Vectors, long Elements, long Outliers)
{
    /// <summary>Stored outliers per element (0 when nothing was counted).</summary>
    public double OutlierRate => Elements == 0 ? 0 : (double)Outliers / Elements;

    public static KvOutlierCounts operator +(KvOutlierCounts a, KvOutlierCounts b) =>
        new(a.Vectors + b.Vectors, a.Elements + b.Elements, a.Outliers + b.Outliers);
}

/// <summary>A sequence that counts the outliers its codecs stored (<see cref="KvOutlierCounts"/>), per side.</summary>
public interface IKvOutlierReport
{
    KvOutlierCounts KeyOutliers { get; }
    KvOutlierCounts ValueOutliers { get; }
}
