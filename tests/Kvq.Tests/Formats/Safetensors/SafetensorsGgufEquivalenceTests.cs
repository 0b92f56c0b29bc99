using System.Text.Json.Nodes;
using Kvq.Formats.Gguf;
using Kvq.Model;
using Kvq.Model.Loading;
using Kvq.Tensors;
using Kvq.Tests.Formats.Llama2c;
using Xunit.Abstractions;

namespace Kvq.Tests.Formats.Safetensors;

/// <summary>
/// The strong check of the safetensors loader: stories260K.gguf is turned into a Hugging Face folder here (Q/K rows
/// un-permuted back to HF's layout), loaded, and compared with the GGUF: same weights, and the same attention
/// scores when HF weights use rotate-half (neox) RoPE and GGUF weights use adjacent-pair (normal) RoPE.
/// </summary>
public sealed unsafe class SafetensorsGgufEquivalenceTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-st-gguf-").FullName;

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    /// <summary>
    /// Where HF row r of a Q or K matrix sits in GGUF. HF's rotate-half RoPE pairs dims (i, i + d/2) of each head;
    /// llama.cpp's converter permutes each head's rows so those pairs become adjacent, (2i, 2i+1), for its "normal"
    /// RoPE: reshape(heads, 2, d/2, dim).swapaxes(1, 2), i.e. gguf row h*d + 2i + s = hf row h*d + s*d/2 + i for
    /// s in {0, 1} and i &lt; d/2. Inverted: within a head, HF rows 0..d/2-1 are GGUF rows 0, 2, 4, ..., d-2 (first
    /// members of the pairs) and HF rows d/2..d-1 are GGUF rows 1, 3, ..., d-1 (second members).
    /// </summary>
    internal static int GgufRowOfHfRow(int hfRow, int headDim)
    {
        int head = hfRow / headDim, i = hfRow % headDim, half = headDim / 2;
        return head * headDim + (i < half ? 2 * i : 2 * (i - half) + 1);
    }

    /// <summary>GGUF dims are ggml order ([cols, rows]); the bytes are the same row-major matrix HF stores as [rows, cols].</summary>
    private static TestTensor Copy(GgufFile g, string ggufName, string hfName, int unpermuteHeadDim = 0)
    {
        var t = g.Tensor(ggufName);
        Assert.Equal(GgmlType.F32, t.Type);
        var src = new ReadOnlySpan<byte>(g.TensorPointer(t), (int)t.ByteSize);
        long[] shape = t.Dims.Length == 1 ? [t.Dims[0]] : [t.Dims[1], t.Dims[0]];
        byte[] data;
        if (unpermuteHeadDim == 0) data = src.ToArray();
        else
        {
            data = new byte[src.Length];
            int rowBytes = (int)t.RowBytes;
            for (int r = 0; r < t.Rows; r++)
                src.Slice(GgufRowOfHfRow(r, unpermuteHeadDim) * rowBytes, rowBytes).CopyTo(data.AsSpan(r * rowBytes));
        }
        return new TestTensor(hfName, "F32", shape, data);
    }

    /// <summary>Writes stories260K.gguf as a Hugging Face folder (config.json + model.safetensors); other tests reuse it.</summary>
    internal static void WriteStoriesAsHf(GgufFile g, string dir)
    {
        int dim = (int)g.GetInt("llama.embedding_length"), heads = (int)g.GetInt("llama.attention.head_count");
        int layers = (int)g.GetInt("llama.block_count"), headDim = dim / heads;
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray("LlamaForCausalLM"),
            ["model_type"] = "llama",
            ["hidden_size"] = dim,
            ["num_hidden_layers"] = layers,
            ["num_attention_heads"] = heads,
            ["num_key_value_heads"] = (int)g.GetInt("llama.attention.head_count_kv"),
            ["intermediate_size"] = (int)g.GetInt("llama.feed_forward_length"),
            ["vocab_size"] = (int)g.Tensor("token_embd.weight").Dims[1],
            ["rms_norm_eps"] = g.TryGetFloat("llama.attention.layer_norm_rms_epsilon"),
            ["rope_theta"] = 10000.0,
            ["max_position_embeddings"] = 512,
            ["tie_word_embeddings"] = !g.HasTensor("output.weight"),
        };
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        var list = new List<TestTensor> { Copy(g, "token_embd.weight", "model.embed_tokens.weight") };
        for (int l = 0; l < layers; l++)
        {
            string b = $"blk.{l}.", p = $"model.layers.{l}.";
            list.Add(Copy(g, b + "attn_norm.weight", p + "input_layernorm.weight"));
            list.Add(Copy(g, b + "attn_q.weight", p + "self_attn.q_proj.weight", headDim));
            list.Add(Copy(g, b + "attn_k.weight", p + "self_attn.k_proj.weight", headDim));
            list.Add(Copy(g, b + "attn_v.weight", p + "self_attn.v_proj.weight"));
            list.Add(Copy(g, b + "attn_output.weight", p + "self_attn.o_proj.weight"));
            list.Add(Copy(g, b + "ffn_norm.weight", p + "post_attention_layernorm.weight"));
            list.Add(Copy(g, b + "ffn_gate.weight", p + "mlp.gate_proj.weight"));
            list.Add(Copy(g, b + "ffn_up.weight", p + "mlp.up_proj.weight"));
            list.Add(Copy(g, b + "ffn_down.weight", p + "mlp.down_proj.weight"));
        }
        list.Add(Copy(g, "output_norm.weight", "model.norm.weight"));
        if (g.HasTensor("output.weight")) list.Add(Copy(g, "output.weight", "lm_head.weight"));
        SafetensorsTestWriter.Write(Path.Combine(dir, "model.safetensors"), list);
    }

    private static double[] Row(WeightMatrix m, int r)
    {
        var f = new float[m.Cols];
        m.DequantizeRow(r, f);
        return Array.ConvertAll(f, v => (double)v);
    }

    private static double[] Row(GgufFile g, string name, int r)
    {
        var t = g.Tensor(name);
        var f = new ReadOnlySpan<float>(g.TensorPointer(t) + r * t.RowBytes, (int)t.Dims[0]);
        var d = new double[f.Length];
        for (int i = 0; i < d.Length; i++) d[i] = f[i];
        return d;
    }

    private static float[] Floats(GgufFile g, string name)
    {
        var t = g.Tensor(name);
        return new ReadOnlySpan<float>(g.TensorPointer(t), (int)t.Elements).ToArray();
    }

    [Fact]
    public void Loaded_weights_are_the_gguf_weights_with_qk_rows_unpermuted()
    {
        using var g = GgufFile.Open(Fixtures.StoriesGguf);
        WriteStoriesAsHf(g, _dir);
        using var w = SafetensorsLoader.Load(_dir);
        var c = w.Config;
        Assert.Equal((64, 5, 8, 4, 8, 172, 512, RopeStyle.Neox), (c.Dim, c.Layers, c.Heads, c.KvHeads, c.HeadDim, c.FfnDim, c.VocabSize, c.RopeStyle));

        void Same(WeightMatrix m, string name, bool unpermute = false)
        {
            for (int r = 0; r < m.Rows; r++)
                Assert.Equal(Row(g, name, unpermute ? GgufRowOfHfRow(r, c.HeadDim) : r), Row(m, r));
        }
        Same(w.TokenEmbedding, "token_embd.weight");
        Same(w.Output, "output.weight");
        Assert.Equal(Floats(g, "output_norm.weight"), w.OutputNorm);
        for (int l = 0; l < c.Layers; l++)
        {
            var L = w.Layers[l];
            string b = $"blk.{l}.";
            Same(L.Wq, b + "attn_q.weight", unpermute: true);
            Same(L.Wk, b + "attn_k.weight", unpermute: true);
            Same(L.Wv, b + "attn_v.weight");
            Same(L.Wo, b + "attn_output.weight");
            Same(L.WGate!, b + "ffn_gate.weight");
            Same(L.WUp!, b + "ffn_up.weight");
            Same(L.WDown!, b + "ffn_down.weight");
            Assert.Equal(Floats(g, b + "attn_norm.weight"), L.AttnNorm);
            Assert.Equal(Floats(g, b + "ffn_norm.weight"), L.FfnNorm);
        }
    }

    // Reference RoPE in double: angle of pair i at position p is p * base^(-2i/d).
    private static double[] RopeNormal(double[] v, int pos, double ropeBase)
    {
        var r = (double[])v.Clone();
        int d = v.Length;
        for (int i = 0; i < d / 2; i++)
        {
            double a = pos * Math.Pow(ropeBase, -2.0 * i / d), cos = Math.Cos(a), sin = Math.Sin(a);
            r[2 * i] = v[2 * i] * cos - v[2 * i + 1] * sin;
            r[2 * i + 1] = v[2 * i] * sin + v[2 * i + 1] * cos;
        }
        return r;
    }

    private static double[] RopeNeox(double[] v, int pos, double ropeBase)
    {
        var r = (double[])v.Clone();
        int d = v.Length, half = d / 2;
        for (int i = 0; i < half; i++)
        {
            double a = pos * Math.Pow(ropeBase, -2.0 * i / d), cos = Math.Cos(a), sin = Math.Sin(a);
            r[i] = v[i] * cos - v[i + half] * sin;
            r[i + half] = v[i] * sin + v[i + half] * cos;
        }
        return r;
    }

    private static double Dot(double[] a, double[] b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += a[i] * b[i];
        return s;
    }

    /// <summary>One head's projection W[head rows] x, in double.</summary>
    private static double[] Project(Func<int, double[]> row, int head, int headDim, double[] x)
    {
        var y = new double[headDim];
        for (int i = 0; i < headDim; i++) y[i] = Dot(row(head * headDim + i), x);
        return y;
    }

    [Fact]
    public void Neox_rope_on_hf_weights_gives_the_scores_of_normal_rope_on_gguf_weights()
    {
        using var g = GgufFile.Open(Fixtures.StoriesGguf);
        WriteStoriesAsHf(g, _dir);
        using var w = SafetensorsLoader.Load(_dir);
        var c = w.Config;
        var rng = new Random(20261126);
        double[] Vec() { var v = new double[c.Dim]; for (int i = 0; i < v.Length; i++) v[i] = rng.NextDouble() * 2 - 1; return v; }

        double worstRel = 0;
        int checks = 0, wrongStyleAgrees = 0;
        for (int l = 0; l < c.Layers; l++)
        {
            var L = w.Layers[l];
            for (int h = 0; h < c.Heads; h++)
            {
                int kvh = h / c.GroupSize;
                for (int trial = 0; trial < 4; trial++)
                {
                    double[] x = Vec(), x2 = Vec();
                    // Distinct positions: at equal positions both rotations are the same orthogonal map on q and k,
                    // so any pairing would give the same score and the check would prove nothing.
                    int p = rng.Next(0, 4096), p2 = (p + 1 + rng.Next(0, 4095)) % 4096;
                    var qG = Project(r => Row(g, $"blk.{l}.attn_q.weight", r), h, c.HeadDim, x);
                    var kG = Project(r => Row(g, $"blk.{l}.attn_k.weight", r), kvh, c.HeadDim, x2);
                    var qH = Project(r => Row(L.Wq, r), h, c.HeadDim, x);
                    var kH = Project(r => Row(L.Wk, r), kvh, c.HeadDim, x2);

                    double gguf = Dot(RopeNormal(qG, p, c.RopeBase), RopeNormal(kG, p2, c.RopeBase));
                    double hf = Dot(RopeNeox(qH, p, c.RopeBase), RopeNeox(kH, p2, c.RopeBase));
                    double scale = Math.Sqrt(Dot(qG, qG) * Dot(kG, kG));   // |score| <= |q||k|
                    worstRel = Math.Max(worstRel, Math.Abs(gguf - hf) / scale);
                    // Control: HF-layout weights with the GGUF rotation must disagree (the test can fail).
                    double wrong = Dot(RopeNormal(qH, p, c.RopeBase), RopeNormal(kH, p2, c.RopeBase));
                    if (Math.Abs(wrong - gguf) / scale < 1e-3) wrongStyleAgrees++;
                    checks++;
                }
            }
        }
        Assert.Equal(5 * 8 * 4, checks);
        Assert.True(worstRel < 1e-12, $"worst relative score difference {worstRel}");
        Assert.True(wrongStyleAgrees < checks / 10, $"the wrong RoPE style agreed in {wrongStyleAgrees} of {checks} checks");
    }

    /// <summary>The same check through the whole forward pass: 200 tokens, every position's logits.</summary>
    [Fact]
    public void Forward_pass_with_neox_rope_matches_the_gguf_logits()
    {
        using (var g = GgufFile.Open(Fixtures.StoriesGguf)) WriteStoriesAsHf(g, _dir);
        using var hf = SafetensorsLoader.Load(_dir);
        using var gguf = GgufModelLoader.Load(Fixtures.StoriesGguf);
        Assert.Equal((RopeStyle.Neox, RopeStyle.Normal), (hf.Config.RopeStyle, gguf.Config.RopeStyle));
        int vocab = hf.Config.VocabSize;
        var tokens = Llama2cForwardTests.Tokens(seed: 6, n: 200, vocab);
        var expected = Llama2cForwardTests.Logits(gguf, tokens);
        double Worst(float[] actual)
        {
            double worst = 0;
            for (int i = 0; i < actual.Length; i++) worst = Math.Max(worst, Math.Abs(actual[i] - expected[i]));
            return worst;
        }
        double worst = Worst(Llama2cForwardTests.Logits(hf, tokens));
        Assert.True(worst < 1e-4, $"worst logit difference {worst}");

        // Control: the same HF weights run with adjacent-pair RoPE must be visibly wrong.
        var wrongStyle = new ModelWeights
        {
            Config = hf.Config with { RopeStyle = RopeStyle.Normal },
            TokenEmbedding = hf.TokenEmbedding, Layers = hf.Layers, OutputNorm = hf.OutputNorm, Output = hf.Output,
            Fingerprint = hf.Fingerprint, SourcePath = hf.SourcePath,
        };
        double wrong = Worst(Llama2cForwardTests.Logits(wrongStyle, tokens));
        output.WriteLine($"stories260K, 200 tokens: max |logit diff| HF+neox vs GGUF+normal {worst:G3}; HF+normal vs GGUF+normal {wrong:G3}");
        Assert.True(wrong > 0.5, $"adjacent-pair RoPE on HF weights only moved logits by {wrong}");
    }
}
