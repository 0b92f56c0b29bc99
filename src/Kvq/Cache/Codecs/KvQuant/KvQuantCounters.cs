namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>
/// What the nuq codecs did with outliers: vectors encoded, outliers stored exactly, and outliers that found no free
/// slot and were clamped to the nearest level instead (keys only: their count per token varies). Each codec keeps
/// its own counts; <see cref="Total"/> sums every codec of the process (reset it before a measurement).
/// </summary>
public sealed class KvQuantCounters
{
    private long _vectors, _outliers, _clamped, _elements;

    public long Vectors => Interlocked.Read(ref _vectors);
    public long Elements => Interlocked.Read(ref _elements);
    public long Outliers => Interlocked.Read(ref _outliers);
    public long Clamped => Interlocked.Read(ref _clamped);

    /// <summary>Stored outliers per element.</summary>
    public double OutlierRate => Elements == 0 ? 0 : (double)Outliers / Elements;
    /// <summary>Clamped outliers per element.</summary>
    public double ClampedRate => Elements == 0 ? 0 : (double)Clamped / Elements;

    public static KvQuantCounters Total { get; } = new();
    public static KvQuantCounters TotalKeys { get; } = new();
    public static KvQuantCounters TotalValues { get; } = new();

    internal void Add(int elements, int outliers, int clamped)
    {
        Interlocked.Increment(ref _vectors);
        Interlocked.Add(ref _elements, elements);
        if (outliers != 0) Interlocked.Add(ref _outliers, outliers);
        if (clamped != 0) Interlocked.Add(ref _clamped, clamped);
    }

    public void Reset()
    {
        Interlocked.Exchange(ref _vectors, 0);
        Interlocked.Exchange(ref _elements, 0);
        Interlocked.Exchange(ref _outliers, 0);
        Interlocked.Exchange(ref _clamped, 0);
    }

    public static void ResetTotals()
    {
        Total.Reset();
        TotalKeys.Reset();
        TotalValues.Reset();
    }

    internal static void Record(KvQuantCounters own, KvSide side, int elements, int outliers, int clamped)
    {
        own.Add(elements, outliers, clamped);
        Total.Add(elements, outliers, clamped);
        (side == KvSide.Key ? TotalKeys : TotalValues).Add(elements, outliers, clamped);
    }
}
