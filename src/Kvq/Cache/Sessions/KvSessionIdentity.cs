using System.Security.Cryptography;
using System.Text;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cache.Layout;
using Kvq.Model;
using Kvq.Tokenizers;

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

    /// <summary>The identity of <paramref name="plan"/>'s cache for the model of <paramref name="weights"/> and
    /// <paramref name="tokenizer"/>.</summary>
    public static KvSessionIdentity For(ModelWeights weights, ITokenizer tokenizer, KvLayoutPlan plan) =>
        new(ModelHash(weights.Config, tokenizer, weights.Fingerprint),
            $"{weights.Config.Architecture} {weights.Config.Layers} layers, dim {weights.Config.Dim}, vocab {tokenizer.VocabSize}, weights {weights.Fingerprint}",
            plan);

    public static KvSessionIdentity For(LoadedModel model, KvLayoutPlan plan) => For(model.Weights, model.Tokenizer, plan);

    /// <summary>SHA-256 (first 16 bytes, hex) over the config's fields, every token's bytes, piece and end flag, the
    /// special ids, and the weights' fingerprint.</summary>
    private static string ModelHash(ModelConfig config, ITokenizer tok, string weightsFingerprint)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        h.AppendData(Encoding.UTF8.GetBytes(config.ToString()));
        h.AppendData(Encoding.UTF8.GetBytes($"|{tok.VocabSize}|{tok.BosId}|{tok.EosId}|{tok.AddBos}|{tok.AddSpacePrefix}|{weightsFingerprint}|"));
        Span<byte> len = stackalloc byte[4];
        for (int id = 0; id < tok.VocabSize; id++)
        {
            var bytes = tok.TokenBytes(id);
            BitConverter.TryWriteBytes(len, bytes.Length);
            h.AppendData(len);
            h.AppendData(bytes);
            var piece = Encoding.UTF8.GetBytes(tok.Piece(id));
            BitConverter.TryWriteBytes(len, piece.Length);
            h.AppendData(len);
            h.AppendData(piece);
            h.AppendData(tok.IsEndOfGeneration(id) ? [1] : [0]);
        }
        return Convert.ToHexString(h.GetHashAndReset().AsSpan(0, 16)).ToLowerInvariant();
    }

    private static string Hash(string s) =>
        Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(s)).AsSpan(0, 16)).ToLowerInvariant();
}
