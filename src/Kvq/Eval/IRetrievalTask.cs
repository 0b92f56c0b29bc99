namespace Kvq.Eval;

/// <summary>A long-context retrieval task: how its prompts are built and how an answer is scored.</summary>
public interface IRetrievalTask
{
    string Name { get; }
    /// <summary>Tokens to decode greedily after the prompt.</summary>
    int MaxNewTokens { get; }
    /// <summary>The longest prompt of at most <paramref name="length"/> tokens with the needle at <paramref name="depth"/>
    /// (0..1); key and text position from (<paramref name="seed"/>, <paramref name="trial"/>).</summary>
    RetrievalPrompt Build(int length, double depth, int trial, int seed);
    /// <summary>Whether the generated continuation gives exactly the answer.</summary>
    bool IsCorrect(string generated, string answer);
    /// <summary>A graded score in [0, 1]: the fraction of the answer's characters that the model's answer matches from
    /// its start (1 when correct). Tells near misses (the first digits of a key) from no recall at all.</summary>
    double PrefixMatch(string generated, string answer);
}
