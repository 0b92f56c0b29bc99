using Kvq.Formats.Gguf;

namespace Kvq.Tests.Model;

/// <summary>
/// Writes small random-weight GGUF models for shapes the fixtures lack (MQA, neox RoPE, qwen2 biases, tied output).
/// The vocabulary is stories260K's (copied from its GGUF) so that llama.cpp can load the file.
/// </summary>
public sealed record TinyModelSpec(string Arch = "llama", int Dim = 64, int Layers = 2, int Heads = 4, int KvHeads = 2,
    int Ffn = 96, bool Tied = false, bool Biases = false, float RopeBase = 10000f, int Seed = 7)
{
    public string Describe => $"{Arch} dim{Dim} L{Layers} h{Heads} kv{KvHeads}{(Tied ? " tied" : "")}{(Biases ? " bias" : "")}";
}

public static class TinyModelWriter
{
    public static string Write(TinyModelSpec s, string dir, Action<GgufWriter>? tamper = null)
    {
        using var vocabSource = GgufFile.Open(Fixtures.StoriesGguf);
        var tokens = vocabSource.Get<string[]>("tokenizer.ggml.tokens");
        int vocab = tokens.Length, hd = s.Dim / s.Heads;
        var rng = new Random(s.Seed);
        float[] Rand(long n, float scale)
        {
            var a = new float[n];
            for (long i = 0; i < n; i++) a[i] = (float)((rng.NextDouble() * 2 - 1) * scale);
            return a;
        }
        float[] Norm(int n)
        {
            var a = new float[n];
            for (int i = 0; i < n; i++) a[i] = 0.8f + 0.4f * (float)rng.NextDouble();
            return a;
        }
        var w = new GgufWriter();
        w.Add("general.architecture", s.Arch);
        w.Add("general.name", "tiny-" + s.Describe);
        w.Add($"{s.Arch}.context_length", 512u);
        w.Add($"{s.Arch}.embedding_length", (uint)s.Dim);
        w.Add($"{s.Arch}.block_count", (uint)s.Layers);
        w.Add($"{s.Arch}.feed_forward_length", (uint)s.Ffn);
        w.Add($"{s.Arch}.attention.head_count", (uint)s.Heads);
        w.Add($"{s.Arch}.attention.head_count_kv", (uint)s.KvHeads);
        w.Add($"{s.Arch}.attention.layer_norm_rms_epsilon", 1e-5f);
        w.Add($"{s.Arch}.rope.freq_base", s.RopeBase);
        w.Add($"{s.Arch}.rope.dimension_count", (uint)hd);
        foreach (var (key, type) in vocabSource.MetadataTypes)
            if (key.StartsWith("tokenizer.", StringComparison.Ordinal)) w.AddRaw(key, type, vocabSource.Metadata[key]);
        float scale = 1f / MathF.Sqrt(s.Dim);
        w.AddTensor("token_embd.weight", [s.Dim, vocab], Rand((long)s.Dim * vocab, 1f));
        w.AddTensor("output_norm.weight", [s.Dim], Norm(s.Dim));
        if (!s.Tied) w.AddTensor("output.weight", [s.Dim, vocab], Rand((long)s.Dim * vocab, scale));
        for (int l = 0; l < s.Layers; l++)
        {
            string p = $"blk.{l}.";
            w.AddTensor(p + "attn_norm.weight", [s.Dim], Norm(s.Dim));
            w.AddTensor(p + "attn_q.weight", [s.Dim, s.Heads * hd], Rand((long)s.Dim * s.Heads * hd, scale));
            w.AddTensor(p + "attn_k.weight", [s.Dim, s.KvHeads * hd], Rand((long)s.Dim * s.KvHeads * hd, scale));
            w.AddTensor(p + "attn_v.weight", [s.Dim, s.KvHeads * hd], Rand((long)s.Dim * s.KvHeads * hd, scale));
            if (s.Biases)
            {
                w.AddTensor(p + "attn_q.bias", [s.Heads * hd], Rand(s.Heads * hd, 0.5f));
                w.AddTensor(p + "attn_k.bias", [s.KvHeads * hd], Rand(s.KvHeads * hd, 0.5f));
                w.AddTensor(p + "attn_v.bias", [s.KvHeads * hd], Rand(s.KvHeads * hd, 0.5f));
            }
            w.AddTensor(p + "attn_output.weight", [s.Heads * hd, s.Dim], Rand((long)s.Dim * s.Heads * hd, scale));
            w.AddTensor(p + "ffn_norm.weight", [s.Dim], Norm(s.Dim));
            w.AddTensor(p + "ffn_gate.weight", [s.Dim, s.Ffn], Rand((long)s.Dim * s.Ffn, scale));
            w.AddTensor(p + "ffn_up.weight", [s.Dim, s.Ffn], Rand((long)s.Dim * s.Ffn, scale));
            w.AddTensor(p + "ffn_down.weight", [s.Ffn, s.Dim], Rand((long)s.Dim * s.Ffn, 1f / MathF.Sqrt(s.Ffn)));
        }
        tamper?.Invoke(w);
        Directory.CreateDirectory(dir);
        var path = Path.Combine(dir, $"tiny-{s.Arch}-{s.Heads}-{s.KvHeads}-{s.Tied}-{s.Biases}-{s.Seed}.gguf");
        w.Save(path);
        return path;
    }
}
