namespace Kvq.Cache.Sessions;

/// <summary>
/// A sequence's compressed cache as saved to a session file: the encoded blocks and what lives beside them
/// (<see cref="SwappedKv"/>, the same host copy swap preemption makes), and the logits after its last token, so a
/// restored session samples its next token without running the model.
/// </summary>
/// <param name="Logits">(vocab) logits after the last token; restoring gives them back bit for bit. Empty for a cached
/// prefix saved without them (a server's prompt cache: Serving.PromptCacheStore).</param>
public sealed record KvSession(KvSessionIdentity Identity, SwappedKv Kv, float[] Logits)
{
    /// <summary>Token ids the session holds (prompt and whatever followed), in order.</summary>
    public ReadOnlySpan<int> Tokens => Kv.Tokens;

    /// <summary>A copy of <paramref name="sequence"/>'s cache (left as it is) with the logits after its last token.</summary>
    public static KvSession Capture(PagedKvSequence sequence, KvSessionIdentity identity, ReadOnlySpan<float> logits)
    {
        if (Stored(sequence.Cache.Config) != Stored(identity.Plan.Config) || sequence.Cache.Shape.Layers != identity.Plan.Shape.Layers
            || sequence.Cache.Shape.KvDim != identity.Plan.Shape.KvDim)
            throw new ArgumentException($"the sequence's cache is {sequence.Cache.Config.Name}, the session identity's {identity.Plan.Config.Name}");
        return new KvSession(identity, sequence.Snapshot(), logits.ToArray());
    }

    /// <summary>What decides the stored bytes: not where they live (file tier) nor which blocks attention reads.</summary>
    private static KvCacheConfig Stored(KvCacheConfig c) => c with { BlockDirectory = null, Offload = null };

    /// <summary>A new sequence in <paramref name="cache"/> holding exactly what was saved (a fresh cache of the
    /// identity's plan when null).</summary>
    public PagedKvSequence Restore(PagedKvCache? cache = null) =>
        PagedKvSequence.SwapIn(cache ?? new PagedKvCache(Identity.Plan), Kv);

    public void Save(string path) => KvSessionFile.Write(path, this);

    /// <summary>Reads a session and checks it against <paramref name="expected"/> (model and format).</summary>
    /// <exception cref="KvSessionException">The file is missing, not a session, truncated, corrupted, or from another
    /// model or format.</exception>
    public static KvSession Load(string path, KvSessionIdentity expected) => KvSessionFile.Read(path, expected);
}
