using LLama;
using LLama.Native;

namespace Kvq.Bench;

/// <summary>
/// Weights quantized by llama.cpp itself (llama_model_quantize through LLamaSharp), for "full quantization" rows of
/// `kvq eval` (llama.cpp-quantized weights with a low-bit KV cache). Same call as the tests' QuantizedFixtures.
/// </summary>
public static class QuantizeMode
{
    public static void Run(Args opts)
    {
        var modelPath = opts.Get("--model", Path.Combine("..", "shared", "models", "books-19m.gguf"));
        var type = opts.Get("--type", "Q4_K_M").Trim().ToUpperInvariant();
        var output = opts.Get("--out", Path.Combine(Path.GetTempPath(), $"{Path.GetFileNameWithoutExtension(modelPath)}.{type}.gguf"));
        if (!Enum.TryParse<LLamaFtype>("MOSTLY_" + type, out var ftype) || !Enum.IsDefined(ftype))
            throw new ArgumentException($"unknown llama.cpp file type '{type}' (e.g. Q8_0, Q4_0, Q4_K_M, Q6_K)");
        NativeApi.llama_empty_call(); // loads llama.cpp (LLamaSharp resolves the native library on first use of NativeApi)
        NativeLogConfig.llama_log_set((level, msg) => { if (level >= LLamaLogLevel.Error) Console.Error.Write(msg); });
        // quantizeOutputTensor: true, as the llama-quantize tool does by default.
        if (!LLamaQuantizer.Quantize(modelPath, output, ftype, Math.Max(1, Environment.ProcessorCount), true, true))
            throw new InvalidOperationException($"llama.cpp could not quantize {modelPath} to {type}");
        Console.WriteLine($"{output}: {new FileInfo(output).Length:N0} bytes ({type} by llama.cpp from {modelPath})");
    }
}
