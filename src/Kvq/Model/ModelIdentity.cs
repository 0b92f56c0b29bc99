using System.Security.Cryptography;
using System.Text;
using Kvq.Cache.Layout;
using Kvq.Cache.Sessions;
using Kvq.Tokenizers;

namespace Kvq.Model;

/// <summary>
/// What a saved KV session is bound to on the model's side: <see cref="Hash"/> changes with anything that changes the
/// model's outputs (its config, its tokenizer's vocabulary and special ids, its weights' fingerprint);
/// <see cref="Description"/> names the model in errors. <see cref="Session"/> adds the cache's layout.
/// </summary>
public sealed record ModelIdentity(string Hash, string Description)
{
    public static ModelIdentity Of(ModelWeights weights, ITokenizer tokenizer) =>
        new(ModelHash(weights.Config, tokenizer, weights.Fingerprint),
            $"{weights.Config.Architecture} {weights.Config.Layers} layers, dim {weights.Config.Dim}, vocab {tokenizer.VocabSize}, weights {weights.Fingerprint}");

    public static ModelIdentity Of(LoadedModel model) => Of(model.Weights, model.Tokenizer);

    /// <summary>The identity of <paramref name="plan"/>'s cache for this model.</summary>
    public KvSessionIdentity Session(KvLayoutPlan plan) => KvSessionIdentity.For(Hash, Description, plan);

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
}
