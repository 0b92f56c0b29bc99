namespace Kvq.Serving;

/// <summary>
/// The token runs of recently finished requests (at most <see cref="Capacity"/>, newest first), each trimmed to whole
/// blocks: what the prefix cache may still hold, so <see cref="PromptCacheStore"/> knows which prefixes to save (the
/// prefix index keeps only hashes). A run that is a prefix of a kept one only refreshes that one; a run that extends
/// kept ones replaces them.
/// </summary>
internal sealed class RecentPrefixes(int capacity, int blockTokens)
{
    private readonly LinkedList<int[]> _runs = new();

    public int Capacity { get; } = capacity;

    public int Count => _runs.Count;

    /// <summary>Newest first.</summary>
    public IEnumerable<int[]> Runs => _runs;

    /// <summary>Records <paramref name="tokens"/> (its whole blocks; shorter than a block: nothing) as the newest run.</summary>
    public void Add(ReadOnlySpan<int> tokens)
    {
        int n = tokens.Length / blockTokens * blockTokens;
        if (n == 0 || Capacity == 0) return;
        var run = tokens[..n];
        for (var node = _runs.First; node != null;)
        {
            var next = node.Next;
            var kept = node.Value;
            if (kept.Length >= n && kept.AsSpan(0, n).SequenceEqual(run))
            {
                // Already covered: refresh the longer run.
                _runs.Remove(node);
                _runs.AddFirst(node);
                return;
            }
            if (kept.Length < n && run[..kept.Length].SequenceEqual(kept)) _runs.Remove(node);
            node = next;
        }
        _runs.AddFirst(run.ToArray());
        while (_runs.Count > Capacity) _runs.RemoveLast();
    }
}
