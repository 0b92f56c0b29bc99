namespace Kvq.Tensors;

/// <summary>How RoPE pairs the dimensions of a head.</summary>
public enum RopeStyle
{
    /// <summary>Adjacent pairs (2i, 2i+1): llama.cpp "normal", used by GGUF llama models (Q/K rows permuted at conversion).</summary>
    Normal,
    /// <summary>Half split (i, i + d/2): GPT-NeoX / Hugging Face rotate-half; qwen2 in GGUF; HF safetensors llama.</summary>
    Neox,
}
