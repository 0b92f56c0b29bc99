using System.Text.RegularExpressions;
using Kvq.Tokenizers;

namespace Kvq.Eval;

/// <summary>
/// Needle in a haystack: whole sentences of a book (from a seeded sentence in its middle 80%), the needle
/// "The secret ingredient of the captain's soup is NAME." inserted after round(depth x sentences) of them, then a blank
/// line and "What is the secret ingredient of the captain's soup? The secret ingredient of the captain's soup is".
/// Correct when the first word the model writes is NAME (letters compared ignoring case).
/// </summary>
public sealed partial class NeedleTask : IRetrievalTask
{
    public const string Question = "What is the secret ingredient of the captain's soup? The secret ingredient of the captain's soup is";

    /// <summary>Names the needle draws from (one per trial).</summary>
    public static readonly IReadOnlyList<string> Names =
        ["saffron", "cinnamon", "nutmeg", "ginger", "rosemary", "thyme", "mustard", "vinegar", "cloves", "paprika", "fennel", "tarragon"];

    private readonly ITokenizer _tokenizer;
    private readonly string _book;
    private readonly int[] _ends; // offset just past each sentence of the book

    /// <param name="book">The haystack text, normalised (LF line ends).</param>
    public NeedleTask(ITokenizer tokenizer, string book)
    {
        _tokenizer = tokenizer;
        _book = book;
        _ends = SentenceEnds(book);
        if (_ends.Length < 20) throw new ArgumentException($"the haystack text has {_ends.Length} sentences: too few for needle prompts");
    }

    public string Name => "needle";
    public int MaxNewTokens => 8;

    public static string NeedleSentence(string name) => $"The secret ingredient of the captain's soup is {name}.";

    public static string NameFor(int seed, int trial) => Names[new Random(RetrievalPromptBuilder.TrialSeed(seed, trial)).Next(Names.Count)];

    /// <summary>First sentence of the trial's haystack: uniform over the middle 80% of the book's sentences (skips front
    /// and back matter such as licences).</summary>
    public int FirstSentence(int seed, int trial)
    {
        var rng = new Random(RetrievalPromptBuilder.TrialSeed(seed, trial) ^ 0x5EED);
        return rng.Next(_ends.Length / 10, _ends.Length * 9 / 10);
    }

    /// <summary>Sentence ends (offsets just past '.', '!' or '?' and any closing quotes or brackets, where whitespace follows).</summary>
    public static int[] SentenceEnds(string text)
    {
        var ends = new List<int>();
        for (int i = 0; i < text.Length; i++)
        {
            if (text[i] is not ('.' or '!' or '?')) continue;
            int j = i + 1;
            while (j < text.Length && text[j] is '"' or '\'' or ')' or '\u201D' or '\u2019') j++;
            if (j == text.Length || char.IsWhiteSpace(text[j])) ends.Add(j);
            i = j - 1;
        }
        return ends.ToArray();
    }

    /// <summary>Sentences [first, first+n) of the book with the needle after k of them, split where the needle starts.</summary>
    public (string Before, string From) Compose(string name, int first, int n, int k)
    {
        int start = first == 0 ? 0 : _ends[first - 1];
        int mid = k == 0 ? start : _ends[first + k - 1];
        int end = n == 0 ? start : _ends[first + n - 1];
        string before = _book[start..mid].TrimStart();
        string after = _book[mid..end];
        string from = NeedleSentence(name) + after + "\n\n" + Question;
        return (before.Length == 0 ? "" : before + " ", from);
    }

    public RetrievalPrompt Build(int length, double depth, int trial, int seed)
    {
        string name = NameFor(seed, trial);
        int first = FirstSentence(seed, trial);
        int available = _ends.Length - first;
        return RetrievalPromptBuilder.Fit(_tokenizer, Name, length, depth, trial, name, available,
            (n, k) => Compose(name, first, n, k));
    }

    /// <summary>Exact recall: the first word of the output is the name (case ignored).</summary>
    public bool IsCorrect(string generated, string answer)
    {
        var m = FirstWord().Match(generated);
        return m.Success && string.Equals(m.Value, answer, StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>Leading letters of the first word that agree with the name (case ignored), as a fraction of the name.</summary>
    public double PrefixMatch(string generated, string answer)
    {
        var m = FirstWord().Match(generated);
        return m.Success ? RetrievalPromptBuilder.CommonPrefix(m.Value, answer, ignoreCase: true) / (double)answer.Length : 0;
    }

    [GeneratedRegex("[A-Za-z]+")]
    private static partial Regex FirstWord();
}
