using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Kvq.Formats.Gguf;
using Kvq.Model.Loading;
using Kvq.Tensors;

namespace Kvq.Tests.Formats.Llama2c;

public sealed unsafe class Llama2cLoaderTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-l2c-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Reads_the_stories260K_header()
    {
        using var w = Llama2cLoader.Load(Fixtures.StoriesBin);
        var c = w.Config;
        Assert.Equal(("llama", 64, 5, 8, 4, 8, 172, 512, 512), (c.Architecture, c.Dim, c.Layers, c.Heads, c.KvHeads, c.HeadDim, c.FfnDim, c.VocabSize, c.ContextLength));
        Assert.Equal((10000f, 1f, 8, 1e-5f, RopeStyle.Normal), (c.RopeBase, c.RopeScale, c.RopeDims, c.NormEps, c.RopeStyle));
        Assert.True(w.TiedOutput);   // positive vocab_size: the classifier is the embedding
        Assert.Equal(Fixtures.StoriesBin, w.SourcePath);
        Assert.IsType<Kvq.Formats.MappedFile>(w.Owner);
    }

    private static void SameBytes(GgufFile g, string name, WeightMatrix m)
    {
        var t = g.Tensor(name);
        Assert.Equal(GgmlType.F32, m.Type);
        Assert.Equal([m.Cols, m.Rows], t.Dims);   // ggml order: dims[0] is the row length
        Assert.True(new ReadOnlySpan<byte>(g.TensorPointer(t), (int)t.ByteSize).SequenceEqual(new ReadOnlySpan<byte>(m.Data, (int)m.ByteSize)),
            $"{m.Name} differs from {name}");
    }

    private static void SameFloats(GgufFile g, string name, float[] v)
    {
        var t = g.Tensor(name);
        Assert.Equal([v.Length], t.Dims);
        Assert.True(new ReadOnlySpan<float>(g.TensorPointer(t), v.Length).SequenceEqual(v), $"{name} differs");
    }

    /// <summary>
    /// The MANIFEST says the .bin and the GGUF hold byte-identical weights. This also settles the RoPE style of .bin:
    /// attn_q/attn_k equal wq/wk row for row (no head-wise permutation), and llama.cpp runs the GGUF with adjacent-pair
    /// ("normal") RoPE, as llama2.c's run.c does, so .bin Q/K are in adjacent-pair layout: RopeStyle.Normal.
    /// </summary>
    [Fact]
    public void Every_weight_equals_the_gguf_conversion()
    {
        using var w = Llama2cLoader.Load(Fixtures.StoriesBin);
        using var g = GgufFile.Open(Fixtures.StoriesGguf);
        SameBytes(g, "token_embd.weight", w.TokenEmbedding);
        SameBytes(g, "output.weight", w.Output);   // the GGUF stores the shared classifier as a copy
        SameFloats(g, "output_norm.weight", w.OutputNorm);
        for (int l = 0; l < w.Config.Layers; l++)
        {
            var L = w.Layers[l];
            string b = $"blk.{l}.";
            SameFloats(g, b + "attn_norm.weight", L.AttnNorm);
            SameBytes(g, b + "attn_q.weight", L.Wq);
            SameBytes(g, b + "attn_k.weight", L.Wk);
            SameBytes(g, b + "attn_v.weight", L.Wv);
            SameBytes(g, b + "attn_output.weight", L.Wo);
            SameFloats(g, b + "ffn_norm.weight", L.FfnNorm);
            SameBytes(g, b + "ffn_gate.weight", L.WGate!);
            SameBytes(g, b + "ffn_up.weight", L.WUp!);
            SameBytes(g, b + "ffn_down.weight", L.WDown!);
        }
        Assert.Equal(g.Tensors.Count, 3 + 9 * w.Config.Layers);
    }

    [Fact]
    public void Query_rows_are_not_in_the_hf_rotate_half_order()
    {
        // Control for the finding above: the identical-bytes check must be able to tell the two Q layouts apart.
        // Under the HF order each head would list the adjacent-pair rows as 0,2,4,..,1,3,5,..; row 1 of a head would
        // then equal GGUF row 2.
        using var w = Llama2cLoader.Load(Fixtures.StoriesBin);
        using var g = GgufFile.Open(Fixtures.StoriesGguf);
        var t = g.Tensor("blk.0.attn_q.weight");
        var gguf = new ReadOnlySpan<float>(g.TensorPointer(t), (int)t.Elements);
        var bin = new ReadOnlySpan<float>(w.Layers[0].Wq.Data, (int)t.Elements);
        int d = w.Config.Dim;
        Assert.True(bin.Slice(1 * d, d).SequenceEqual(gguf.Slice(1 * d, d)));
        Assert.False(bin.Slice(1 * d, d).SequenceEqual(gguf.Slice(2 * d, d)));
    }

    [Fact]
    public void Matrices_point_into_the_map_at_the_header_offsets()
    {
        using var w = Llama2cLoader.Load(Fixtures.StoriesBin);
        var h = Llama2cLoader.ReadHeader(Fixtures.StoriesBin);
        var t = h.Tensors.ToDictionary(x => x.Name);
        byte* start = w.TokenEmbedding.Data - t["token_embedding_table"].Offset;
        for (int l = 0; l < h.Layers; l++)
        {
            Assert.True(w.Layers[l].Wq.Data == start + t["wq"].SliceOffset(l));
            Assert.True(w.Layers[l].WDown!.Data == start + t["w2"].SliceOffset(l));
            Assert.True(w.Layers[l].WUp!.Data == start + t["w3"].SliceOffset(l));
        }
        Assert.Equal(new FileInfo(Fixtures.StoriesBin).Length, h.FileLength);
    }

    /// <summary>The old export's freq_cis tables (skipped by the loader) confirm the RoPE base of 10000 that run.c hard-codes.</summary>
    [Fact]
    public void Stored_rope_tables_match_base_10000()
    {
        var h = Llama2cLoader.ReadHeader(Fixtures.StoriesBin);
        var bytes = File.ReadAllBytes(Fixtures.StoriesBin);
        var re = h.Tensors.Single(x => x.Name == "freq_cis_real");
        var im = h.Tensors.Single(x => x.Name == "freq_cis_imag");
        var cos = MemoryMarshal.Cast<byte, float>(bytes.AsSpan((int)re.Offset, (int)re.ByteSize));
        var sin = MemoryMarshal.Cast<byte, float>(bytes.AsSpan((int)im.Offset, (int)im.ByteSize));
        int half = h.HeadSize / 2;
        double worst = 0;
        for (int p = 0; p < h.SeqLen; p++)
            for (int i = 0; i < half; i++)
            {
                double a = p * Math.Pow(Llama2cLoader.RopeBase, -2.0 * i / h.HeadSize);
                worst = Math.Max(worst, Math.Max(Math.Abs(cos[p * half + i] - Math.Cos(a)), Math.Abs(sin[p * half + i] - Math.Sin(a))));
            }
        Assert.True(worst < 1e-4, $"worst difference {worst}");
    }

    [Fact]
    public void Fingerprint_hashes_the_whole_small_file()
    {
        string a, b, c;
        using (var w = Llama2cLoader.Load(Fixtures.StoriesBin)) a = w.Fingerprint;
        using (var w = Llama2cLoader.Load(Fixtures.StoriesBin)) b = w.Fingerprint;
        var bytes = File.ReadAllBytes(Fixtures.StoriesBin);
        bytes[bytes.Length / 2] ^= 1;   // one bit in the middle of the weights
        string path = Path.Combine(_dir, "flipped.bin");
        File.WriteAllBytes(path, bytes);
        using (var w = Llama2cLoader.Load(path)) c = w.Fingerprint;
        Assert.Matches("^[0-9a-f]{32}$", a);
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
    }

    [Fact]
    public void Negative_vocab_size_reads_an_unshared_classifier()
    {
        var bytes = File.ReadAllBytes(Fixtures.StoriesBin);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(20), -512);
        var wcls = new float[512 * 64];
        var rng = new Random(7);
        for (int i = 0; i < wcls.Length; i++) wcls[i] = rng.NextSingle() - 0.5f;
        string path = Path.Combine(_dir, "unshared.bin");
        File.WriteAllBytes(path, [.. bytes, .. MemoryMarshal.AsBytes(wcls.AsSpan()).ToArray()]);

        using var w = Llama2cLoader.Load(path);
        Assert.False(w.TiedOutput);
        Assert.Equal((512, 64, 512), (w.Output.Rows, w.Output.Cols, w.Config.VocabSize));
        Assert.True(new ReadOnlySpan<float>(w.Output.Data, wcls.Length).SequenceEqual(wcls));
        using var shared = Llama2cLoader.Load(Fixtures.StoriesBin);
        Assert.True(new ReadOnlySpan<byte>(w.Layers[4].WUp!.Data, (int)w.Layers[4].WUp!.ByteSize)
            .SequenceEqual(new ReadOnlySpan<byte>(shared.Layers[4].WUp!.Data, (int)shared.Layers[4].WUp!.ByteSize)));
    }
}
