namespace Kvq.Cache;

/// <summary>
/// A sequence's KV in host memory after <see cref="PagedKvSequence.SwapOut"/>: its token ids, its blocks' encoded
/// bytes per layer ((block, head, bytes) for keys and for values: a compressed cache swaps as compressed bytes), and
/// what it kept outside blocks.
/// </summary>
public sealed record SwappedKv(int[] Tokens, int Length, byte[][] Keys, byte[][] Values, SwappedKv.SideState KeyState,
    SwappedKv.SideState ValueState)
{
    /// <summary>Per side: tokens sealed into blocks per layer, staged recent tokens per layer, exact sink copies.</summary>
    public sealed record SideState(int[] Sealed, (Half[] Data, int Count)[]? Staging, Half[]? Sink);

    /// <summary>Host bytes held.</summary>
    public long Bytes
    {
        get
        {
            long n = 0;
            foreach (var k in Keys) n += k.Length;
            foreach (var v in Values) n += v.Length;
            foreach (var s in new[] { KeyState, ValueState })
            {
                if (s.Staging != null) foreach (var st in s.Staging) n += st.Data.Length * 2L;
                if (s.Sink != null) n += s.Sink.Length * 2L;
            }
            return n;
        }
    }
}
