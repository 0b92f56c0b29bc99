using Kvq.Tensors;

namespace Kvq.Model;

/// <summary>
/// All weights of a Llama-family model, whatever file they came from. Keys produced with these weights are
/// handed to the KV cache before RoPE, in the layout named by <see cref="ModelConfig.RopeStyle"/>.
/// </summary>
public sealed class ModelWeights : IDisposable
{
    public required ModelConfig Config { get; init; }
    public required WeightMatrix TokenEmbedding { get; init; }  // (vocab, dim)
    public required LayerWeights[] Layers { get; init; }
    public required float[] OutputNorm { get; init; }           // (dim)
    public required WeightMatrix Output { get; init; }          // (vocab, dim); the embedding itself when tied
    public bool TiedOutput => ReferenceEquals(Output, TokenEmbedding);
    /// <summary>Source file(s) held open by the weights (memory maps), released on dispose.</summary>
    public IDisposable? Owner { get; init; }
    /// <summary>A hash identifying the weights (for calibration profiles).</summary>
    public required string Fingerprint { get; init; }
    public required string SourcePath { get; init; }
    /// <summary>What the loader decided that the file did not state (e.g. an output matrix tied to the embeddings because
    /// the GGUF has none), for a front end to show the user.</summary>
    public IReadOnlyList<string> Notes { get; init; } = [];

    /// <summary>Every weight matrix once (the tied output is the embedding).</summary>
    public IEnumerable<WeightMatrix> Matrices
    {
        get
        {
            yield return TokenEmbedding;
            if (!TiedOutput) yield return Output;
            foreach (var l in Layers) foreach (var m in l.Matrices) yield return m;
        }
    }

    /// <summary>Research option: keep activations in f32 in every quantized product (true), or round them to 8 bits as
    /// llama.cpp's CPU backend does (false, the default; see <see cref="WeightMatrix.ExactActivations"/>).</summary>
    public void UseExactActivations(bool exact)
    {
        foreach (var m in Matrices) m.ExactActivations = exact;
        ExactGelu = exact;
    }

    /// <summary>Q8_0 products in ggml-cpu's order of float operations (<see cref="WeightMatrix.LlamaCppSumOrder"/>: bitwise
    /// llama.cpp's CPU products, slower than the default kernels); for comparisons with llama.cpp.</summary>
    public void UseLlamaCppSumOrder(bool on)
    {
        foreach (var m in Matrices) m.LlamaCppSumOrder = on;
    }

    /// <summary>Gemma's GELU in f32 (true), or through ggml's f16 table as llama.cpp's CPU backend does (false, the
    /// default; <see cref="GeluHalfTable"/>). Set with the activations by <see cref="UseExactActivations"/>.</summary>
    public bool ExactGelu { get; set; }

    public long ParameterCount
    {
        get
        {
            long n = (long)TokenEmbedding.Rows * TokenEmbedding.Cols + OutputNorm.Length;
            if (!TiedOutput) n += (long)Output.Rows * Output.Cols;
            foreach (var l in Layers)
            {
                n += l.VectorFloats;
                foreach (var m in l.Matrices) n += (long)m.Rows * m.Cols;
            }
            return n;
        }
    }

    public long WeightBytes
    {
        get
        {
            long n = TokenEmbedding.ByteSize + OutputNorm.Length * 4L;
            if (!TiedOutput) n += Output.ByteSize;
            foreach (var l in Layers)
            {
                n += l.VectorFloats * 4L;
                foreach (var m in l.Matrices) n += m.ByteSize;
            }
            return n;
        }
    }

    public void Dispose() => Owner?.Dispose();
}
