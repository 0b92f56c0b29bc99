using System.Security.Cryptography;
using System.Text;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cache.Layout;

namespace Kvq.Cache.Sessions;

/// <summary>
/// What a session file is bound to: the model (a hash of its config, its tokenizer's vocabulary and its weights'
/// fingerprint) and the cache's layout (formats, block size, sink tokens, the calibration profile's content, and the
/// bytes of every layer's blocks). A session restores only where both match; the descriptions name them in errors.
/// </summary>
public sealed class KvSessionIdentity
{
    public string Model { get; }
    public string ModelDescription { get; }
    public string Format { get; }
    public string FormatDescription { get; }
    /// <summary>The layout the session is restored into (never written; the file holds <see cref="Format"/>). Offloading
    /// (<see cref="KvCacheConfig.Offload"/>) is not part of the identity: it changes what attention reads, not what is stored.</summary>
    public KvLayoutPlan Plan { get; }

    private KvSessionIdentity(string model, string modelDescription, KvLayoutPlan plan)
    {
        Model = model;
        ModelDescription = modelDescription;
        Plan = plan;
        var c = plan.Config;
        if (c.Policy != null) throw new KvSpecException($"{c.Name}: a sequence under a token policy cannot be saved as a session");
        string profile = c.Profile switch
        {
            null => "none",
            KvQuantProfile p => KvQuantProfileFile.ContentHash(p),
            { } other => "model " + other.ModelFingerprint,
        };
        FormatDescription = $"{c.FormatName}, block {c.BlockTokens} tokens, {c.SinkTokens} sink tokens, profile {profile}";
        var sb = new StringBuilder(FormatDescription);
        var s = plan.Shape;
        sb.Append($"|shape {s.Layers}x{s.KvHeads}x{s.HeadDim}|staging {plan.Keys.StagingTokens},{plan.Values.StagingTokens}");
        for (int l = 0; l < s.Layers; l++) sb.Append($"|{plan.Keys.BlockLayout(l).Total},{plan.Values.BlockLayout(l).Total}");
        Format = Hash(sb.ToString());
    }

    /// <summary>The identity of <paramref name="plan"/>'s cache for a model: <paramref name="model"/> a hash that changes
    /// with anything that changes the model's outputs, <paramref name="modelDescription"/> what errors name (the
    /// model layer's <c>ModelIdentity</c> gives both).</summary>
    public static KvSessionIdentity For(string model, string modelDescription, KvLayoutPlan plan) => new(model, modelDescription, plan);

    private static string Hash(string s) =>
        Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(s)).AsSpan(0, 16)).ToLowerInvariant();
}
