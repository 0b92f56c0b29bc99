namespace Kvq.Eval;

/// <summary>One greedy answer to one retrieval prompt.</summary>
/// <param name="Output">The decoded continuation (up to the task's MaxNewTokens).</param>
/// <param name="PrefixMatch">The task's graded score: share of the answer matched from its start (1 when correct).</param>
/// <param name="BitsPerElement">Of the cache after the prompt and answer.</param>
public sealed record RetrievalTrial(string Kv, string Task, int Length, double Depth, int Trial, int PromptTokens,
    double NeedleDepth, string Answer, string Output, bool Correct, double PrefixMatch, double BitsPerElement, double KvBytesPerToken, double Seconds);

/// <summary>One row of `kvq eval passkey|needle`: exact-match rate of one cache format at one (length, depth) over trials.</summary>
/// <param name="Length">Prompt budget in tokens; <paramref name="PromptTokens"/> is the mean actual length.</param>
/// <param name="Depth">Needle depth asked for (0 = start, 1 = end); <paramref name="NeedleDepth"/> the mean actual one.</param>
/// <param name="PrefixMatch">Mean of the trials' <see cref="RetrievalTrial.PrefixMatch"/>.</param>
public sealed record RetrievalCell(string Kv, string Task, int Length, double Depth, int Trials, int Correct, double Accuracy,
    double PrefixMatch, double PromptTokens, double NeedleDepth, double BitsPerElement, double KvBytesPerToken, double Seconds);
