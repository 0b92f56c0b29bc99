using System.Collections.Concurrent;
using System.Reflection;
using System.Text;
using LLama;
using LLama.Common;
using LLama.Native;

namespace Kvq.Tests.Tokenizers;

/// <summary>llama.cpp (through LLamaSharp) as the tokenizer oracle: a GGUF loaded vocabulary-only.</summary>
internal sealed unsafe class LlamaCppVocab
{
    private static readonly ConcurrentDictionary<string, Lazy<LlamaCppVocab>> Loaded = new();
    private static readonly MethodInfo DetokenizeMethod =
        typeof(NativeApi).GetMethod("llama_detokenize", BindingFlags.NonPublic | BindingFlags.Static)
        ?? throw new MissingMethodException("LLamaSharp no longer has NativeApi.llama_detokenize");
    private static readonly PropertyInfo VocabNativeProperty =
        typeof(SafeLlamaModelHandle.Vocabulary).GetProperty("VocabNative", BindingFlags.NonPublic | BindingFlags.Instance)
        ?? throw new MissingMemberException("LLamaSharp no longer has Vocabulary.VocabNative");

    private readonly LLamaWeights _weights;

    static LlamaCppVocab()
    {
        // The peer project's static setup silences llama.cpp's logs; run it before the first load here.
        System.Runtime.CompilerServices.RuntimeHelpers.RunClassConstructor(typeof(LlamaCpp.LlamaCppModel).TypeHandle);
    }

    private LlamaCppVocab(string path)
    {
        _weights = LLamaWeights.LoadFromFile(new ModelParams(path) { GpuLayerCount = 0, VocabOnly = true });
    }

    /// <summary>One loaded vocabulary per file for the whole test run.</summary>
    public static LlamaCppVocab Load(string path) =>
        Loaded.GetOrAdd(Path.GetFullPath(path), p => new Lazy<LlamaCppVocab>(() => new LlamaCppVocab(p))).Value;

    public LLamaWeights Weights => _weights;
    private SafeLlamaModelHandle Model => _weights.NativeHandle;
    public SafeLlamaModelHandle.Vocabulary Vocab => Model.Vocab;

    /// <summary>llama_tokenize(text, add_special, parse_special).</summary>
    public int[] Tokenize(string text, bool addSpecial, bool parseSpecial = false)
    {
        var tokens = Model.Tokenize(text, addSpecial, parseSpecial, Encoding.UTF8);
        var ids = new int[tokens.Length];
        for (int i = 0; i < ids.Length; i++) ids[i] = (int)tokens[i];
        return ids;
    }

    /// <summary>llama_token_to_piece(token, lstrip: 0, special: false): what llama.cpp streams per token.</summary>
    public byte[] TokenToPiece(int token)
    {
        Span<byte> buf = stackalloc byte[256];
        uint n = Model.TokenToSpan(token, buf, 0, false);
        if (n > buf.Length) throw new InvalidOperationException($"piece of token {token} is {n} bytes");
        return buf[..(int)n].ToArray();
    }

    /// <summary>llama_detokenize(tokens, remove_special, unparse_special) as raw bytes.</summary>
    public byte[] Detokenize(int[] tokens, bool removeSpecial = false, bool unparseSpecial = false)
    {
        var vocabPtr = VocabNativeProperty.GetValue(Vocab)!; // a boxed LLamaVocabNative*
        var native = new LLamaToken[tokens.Length];
        for (int i = 0; i < tokens.Length; i++) native[i] = tokens[i];
        var buf = new byte[tokens.Length * 64 + 64];
        fixed (LLamaToken* tp = native)
        fixed (byte* bp = buf)
        {
            int n = (int)DetokenizeMethod.Invoke(null,
            [
                vocabPtr, Pointer.Box(tp, typeof(LLamaToken*)), tokens.Length, Pointer.Box(bp, typeof(byte*)), buf.Length,
                removeSpecial, unparseSpecial,
            ])!;
            if (n < 0) throw new InvalidOperationException($"detokenize needs {-n} bytes");
            return buf.AsSpan(0, n).ToArray();
        }
    }
}
