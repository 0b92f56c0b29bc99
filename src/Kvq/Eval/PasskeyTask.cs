using System.Text.RegularExpressions;
using Kvq.Tokenizers;

namespace Kvq.Eval;

/// <summary>
/// The passkey retrieval prompt of Mohtashami and Jaggi (Landmark Attention) as LongLoRA runs it: a task line, the
/// filler "The grass is green. ..." repeated, "The pass key is N. Remember it. N is the pass key." after
/// round(depth x units) repeats, more filler, then "What is the pass key? The pass key is". Lines joined by '\n'.
/// Correct when the first number the model writes is N (5 digits, from the trial's seed).
/// </summary>
public sealed partial class PasskeyTask(ITokenizer tokenizer) : IRetrievalTask
{
    public const string Task = "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz you about the important information there.";
    public const string Filler = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
    public const string Question = "What is the pass key? The pass key is";

    public string Name => "passkey";
    public int MaxNewTokens => 10;

    public static string KeyLine(int key) => $"The pass key is {key}. Remember it. {key} is the pass key.";

    /// <summary>The trial's key: 5 digits, from (seed, trial) only.</summary>
    public static int Key(int seed, int trial) => new Random(RetrievalPromptBuilder.TrialSeed(seed, trial)).Next(10_000, 100_000);

    /// <summary>The prompt text with <paramref name="before"/> filler repeats before the key line and <paramref name="after"/> after it,
    /// split where the key line starts.</summary>
    public static (string Before, string From) Compose(int key, int before, int after)
    {
        string Repeat(int n) => n == 0 ? "" : string.Join(' ', Enumerable.Repeat(Filler, n)) + "\n";
        return (Task + "\n" + Repeat(before), KeyLine(key) + "\n" + Repeat(after) + Question);
    }

    public RetrievalPrompt Build(int length, double depth, int trial, int seed)
    {
        int key = Key(seed, trial);
        return RetrievalPromptBuilder.Fit(tokenizer, Name, length, depth, trial, key.ToString(System.Globalization.CultureInfo.InvariantCulture),
            maxUnits: length, (n, k) => Compose(key, k, n - k));
    }

    /// <summary>Exact match: the first run of digits in the output is the key.</summary>
    public bool IsCorrect(string generated, string answer)
    {
        var m = FirstNumber().Match(generated);
        return m.Success && m.Value == answer;
    }

    /// <summary>Leading digits of the first number that agree with the key, as a fraction of the key's digits.</summary>
    public double PrefixMatch(string generated, string answer)
    {
        var m = FirstNumber().Match(generated);
        return m.Success ? RetrievalPromptBuilder.CommonPrefix(m.Value, answer, ignoreCase: false) / (double)answer.Length : 0;
    }

    [GeneratedRegex("[0-9]+")]
    private static partial Regex FirstNumber();
}
