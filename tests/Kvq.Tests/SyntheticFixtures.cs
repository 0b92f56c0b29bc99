using System.Collections.Concurrent;
using Kvq.Formats.Gguf.Synthetic;
using Kvq.Tensors;
using Kvq.Tokenizers;

namespace Kvq.Tests;

/// <summary>
/// Synthetic random-weight GGUFs (<see cref="SyntheticModels"/>) written once per test process into a temporary folder
/// and shared by the tests that ask for them. The SentencePiece vocabulary is stories260K's.
/// </summary>
public static class SyntheticFixtures
{
    private static readonly Lazy<string> Dir = new(() =>
    {
        var d = Path.Combine(Path.GetTempPath(), "kvq-synthetic-" + Environment.ProcessId + "-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(d);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try { Directory.Delete(d, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        };
        return d;
    });

    /// <summary>SentencePiece: stories260K's. BPE: 700 merges learned from the first 60,000 characters of tinyshakespeare with
    /// each family's pre-tokenizer (tests tokenize other text with them).</summary>
    private static readonly Lazy<SyntheticVocabularies> Vocabularies = new(() =>
    {
        var text = TextFixtures.Read(Fixtures.Text("tinyshakespeare/input.txt"))[..60000];
        return new SyntheticVocabularies(new CopiedVocabulary(Fixtures.StoriesGguf),
            TrainedBpeVocabulary.Llama3(text), TrainedBpeVocabulary.Qwen2(text));
    });
    private static readonly ConcurrentDictionary<string, Lazy<string>> Made = new(StringComparer.Ordinal);

    public static SyntheticVocabularies Vocabs => Vocabularies.Value;

    public static SyntheticModelSpec Spec(string name, GgmlType type = GgmlType.F32) => SyntheticModels.Create(name, Vocabs, type);

    /// <summary>Path of the named synthetic model with <paramref name="type"/> weights, written on first use.</summary>
    public static string Get(string name, GgmlType type = GgmlType.F32) =>
        Made.GetOrAdd($"{name}/{type}", _ => new Lazy<string>(() => SyntheticModelWriter.Write(Spec(name, type), Dir.Value))).Value;

    /// <summary>Writes a custom spec (a variant of a catalog entry) and returns its path.</summary>
    public static string Write(SyntheticModelSpec spec) =>
        Made.GetOrAdd("custom/" + spec.Name, _ => new Lazy<string>(() => SyntheticModelWriter.Write(spec, Dir.Value))).Value;
}
