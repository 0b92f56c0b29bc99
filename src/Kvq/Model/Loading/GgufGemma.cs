using Kvq.Formats;
using Kvq.Formats.Gguf;

namespace Kvq.Model.Loading;

/// <summary>
/// What a gemma2 / gemma3 GGUF adds to a Llama-style config, read as llama.cpp's loaders (llama_model_gemma2/3) read it:
/// sliding layers every <c>attention.sliding_window_pattern</c>-th layer but the last of each period (default 2 for
/// Gemma 2, 6 for Gemma 3; Gemma 2's window defaults to 4096, Gemma 3 slides only when the file gives a window);
/// Gemma 3's sliding layers rotate with <c>rope.freq_base_swa</c> (default 10000) unscaled; soft-caps from
/// <c>attn_logit_softcapping</c> / <c>final_logit_softcapping</c> (Gemma 2 defaults 50 and 30; Gemma 3 has no attention
/// cap, and a final cap only when the file gives one); queries scaled by 1/sqrt(dim / heads) on the 27B models (46 /
/// 62 layers), else by 1/sqrt(head dim); embeddings by sqrt(dim); GeGLU; post-norms.
/// </summary>
internal static class GgufGemma
{
    public static bool IsGemma(string arch) => arch is "gemma2" or "gemma3";

    public static ModelConfig Apply(GgufFile gguf, string arch, ModelConfig c)
    {
        string K(string key) => $"{arch}.{key}";
        bool g2 = arch == "gemma2";
        int window = (int)(gguf.TryGetInt(K("attention.sliding_window")) ?? (g2 ? 4096 : 0));
        int period = window > 0 ? (int)(gguf.TryGetInt(K("attention.sliding_window_pattern")) ?? (g2 ? 2 : 6)) : 0;
        if (window > 0 && period < 1)
            throw new ModelFormatException(gguf.Path, $"metadata '{K("attention.sliding_window_pattern")}'", 0, $"period {period} must be at least 1");
        bool[]? sliding = window > 0 ? Enumerable.Range(0, c.Layers).Select(l => l % period < period - 1).ToArray() : null;
        float localBase = 0, localScale = 1f;
        if (window > 0)
        {
            double? swaBase = gguf.TryGetFloat(K("rope.freq_base_swa"));
            if (g2)
            {
                if (swaBase != null) (localBase, localScale) = ((float)swaBase, c.RopeScale);
            }
            else (localBase, localScale) = ((float)(swaBase ?? 10000.0), 1f);
        }
        bool big = c.Layers == (g2 ? 46 : 62);   // llama.cpp's LLM_TYPE_27B
        return c with
        {
            SlidingWindow = window,
            SlidingLayers = sliding,
            LocalRopeBase = localBase,
            LocalRopeScale = localScale,
            Extras = new DecoderExtras
            {
                EmbeddingScale = MathF.Sqrt(c.Dim),
                Activation = FfnActivation.GeluTanh,
                PostNorms = true,
                AttentionScale = big ? 1f / MathF.Sqrt((float)(c.Dim / c.Heads)) : 0f,
                AttnSoftCap = g2 ? (float)(gguf.TryGetFloat(K("attn_logit_softcapping")) ?? 50.0) : 0f,
                FinalSoftCap = (float)(gguf.TryGetFloat(K("final_logit_softcapping")) ?? (g2 ? 30.0 : 0.0)),
            },
        };
    }
}
