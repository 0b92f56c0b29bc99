using Kvq.Formats.Gguf;
using Kvq.Model;
using Kvq.Model.Loading;
using Kvq.Tests.Model;
using Kvq.Tokenizers;

namespace Kvq.Tests.Calibration.Fisher;

/// <summary>Models and windows the calibration tests share (loaded once per run).</summary>
internal static class CalibrationModels
{
    private static readonly Lazy<ModelWeights> StoriesWeights = new(() => GgufModelLoader.Load(Fixtures.StoriesGguf));
    private static readonly Lazy<int[]> StoriesText = new(() =>
    {
        using var gguf = GgufFile.Open(Fixtures.StoriesGguf);
        var tok = TokenizerFactory.FromGguf(gguf);
        var text = TextFixtures.Read(Fixtures.Text("tinystories/TinyStories-valid.first1000.txt"));
        return tok.Encode(text[..20000], addBos: true);
    });
    private static readonly string TinyDir = Path.Combine(Path.GetTempPath(), "kvq-fisher-tests-" + Environment.ProcessId);

    public static ModelWeights Stories => StoriesWeights.Value;

    /// <summary>The first <paramref name="n"/> tokens of TinyStories (BOS first).</summary>
    public static int[] StoriesWindow(int n) => StoriesText.Value[..n];

    /// <summary>A random-weight tiny model for shapes stories260K lacks (neox RoPE, biases, MQA, group size 1).</summary>
    public static ModelWeights Tiny(TinyModelSpec spec)
    {
        var path = TinyModelWriter.Write(spec, TinyDir);
        return GgufModelLoader.Load(path);
    }
}
