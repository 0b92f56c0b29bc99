namespace Kvq.Cache;

/// <summary>0, 1, 2, ...: the slot positions of a cache where no token was evicted, shared and grown on demand
/// (so attention can pass positions to codecs without a per-sequence array).</summary>
internal static class IdentityPositions
{
    private static int[] _values = Make(4096);

    private static int[] Make(int n)
    {
        var a = new int[n];
        for (int i = 0; i < n; i++) a[i] = i;
        return a;
    }

    public static ReadOnlySpan<int> Span(int length)
    {
        var v = _values;
        if (v.Length < length)
        {
            // Grow by doubling; a racing thread may build its own copy, which holds the same values.
            v = Make(Math.Max(length, v.Length * 2));
            _values = v;
        }
        return v.AsSpan(0, length);
    }
}
