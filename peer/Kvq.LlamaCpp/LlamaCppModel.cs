using LLama;
using LLama.Common;
using LLama.Native;

namespace Kvq.LlamaCpp;

/// <summary>
/// A model loaded by llama.cpp with a fresh context per evaluation: token ids, logits of every position, and
/// timings of prefill and decode. Cache types (f16, q8_0, q4_0) are the peer's own KV quantization.
/// </summary>
public sealed class LlamaCppModel : IDisposable
{
    private readonly LLamaWeights _weights;
    public string Path { get; }
    public int VocabSize { get; }

    static LlamaCppModel()
    {
        // Quiet: llama.cpp logs every load to stderr otherwise. llama_log_set works before or after the native
        // library is loaded (another component may have loaded it first).
        NativeLogConfig.llama_log_set((NativeLogConfig.LLamaLogCallback)((level, msg) => { }));
    }

    public LlamaCppModel(string path)
    {
        Path = path;
        var p = new ModelParams(path) { GpuLayerCount = 0, ContextSize = 512 };
        _weights = LLamaWeights.LoadFromFile(p);
        VocabSize = _weights.Vocab.Count;
    }

    public int[] Tokenize(string text, bool addBos, bool special = false)
    {
        var toks = _weights.NativeHandle.Tokenize(text, addBos, special, System.Text.Encoding.UTF8);
        var r = new int[toks.Length];
        for (int i = 0; i < toks.Length; i++) r[i] = (int)toks[i];
        return r;
    }

    public static GGMLType CacheType(string name) => name switch
    {
        "f16" => GGMLType.GGML_TYPE_F16,
        "f32" => GGMLType.GGML_TYPE_F32,
        "q8_0" => GGMLType.GGML_TYPE_Q8_0,
        "q4_0" => GGMLType.GGML_TYPE_Q4_0,
        "q4_1" => GGMLType.GGML_TYPE_Q4_1,
        "q5_0" => GGMLType.GGML_TYPE_Q5_0,
        "q5_1" => GGMLType.GGML_TYPE_Q5_1,
        _ => throw new ArgumentException($"llama.cpp has no cache type '{name}'"),
    };

    /// <param name="flashAttention">null: llama.cpp's default for the cache type (on for quantized caches, which need it).</param>
    public LlamaCppSession CreateSession(int contextSize, int threads = 2, string cacheType = "f16", int batch = 512, bool? flashAttention = null)
    {
        var p = new ModelParams(Path)
        {
            GpuLayerCount = 0,
            ContextSize = (uint)contextSize,
            BatchSize = (uint)batch,
            UBatchSize = (uint)batch,
            Threads = threads,
            BatchThreads = threads,
            TypeK = CacheType(cacheType),
            TypeV = CacheType(cacheType),
            // Quantized V caches need flash attention in llama.cpp.
            FlashAttention = flashAttention ?? (cacheType != "f16" && cacheType != "f32" ? true : null),
        };
        return new LlamaCppSession(_weights.CreateContext(p), batch);
    }

    public void Dispose() => _weights.Dispose();
}

/// <summary>One llama.cpp context (one sequence).</summary>
public sealed class LlamaCppSession(LLamaContext context, int batchSize) : IDisposable
{
    private int _pos;
    public LLamaContext Context => context;

    public void Reset()
    {
        context.NativeHandle.MemoryClear(true);
        _pos = 0;
    }

    /// <summary>Evaluates tokens at the next positions; returns logits of every token when <paramref name="allLogits"/>
    /// ((n, vocab) row-major) or of the last only.</summary>
    public float[] Eval(ReadOnlySpan<int> tokens, bool allLogits)
    {
        int vocab = context.Vocab.Count;
        var result = new float[(allLogits ? tokens.Length : 1) * vocab];
        var batch = new LLamaBatch();
        for (int done = 0; done < tokens.Length; done += batchSize)
        {
            int n = Math.Min(batchSize, tokens.Length - done);
            batch.Clear();
            for (int i = 0; i < n; i++)
            {
                bool want = allLogits || done + i == tokens.Length - 1;
                batch.Add((LLamaToken)tokens[done + i], _pos + i, LLamaSeqId.Zero, want);
            }
            var rc = context.NativeHandle.Decode(batch);
            if (rc != DecodeResult.Ok) throw new InvalidOperationException($"llama_decode failed: {rc}");
            for (int i = 0; i < n; i++)
            {
                if (!allLogits && done + i != tokens.Length - 1) continue;
                var logits = context.NativeHandle.GetLogitsIth(i);
                logits.CopyTo(result.AsSpan((allLogits ? done + i : 0) * vocab, vocab));
            }
            _pos += n;
        }
        return result;
    }

    public void Dispose() => context.Dispose();
}
