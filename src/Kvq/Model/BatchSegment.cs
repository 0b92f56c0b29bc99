using Kvq.Cache;

namespace Kvq.Model;

/// <summary>
/// One sequence's rows in a batched forward step: tokens [Start, Start+Count) of the step's token list go to
/// <paramref name="Kv"/> at positions Kv.Length, Kv.Length+1, ... .
/// </summary>
/// <param name="Decode">Rows computed by the matrix-vector kernels (<see cref="Tensors.WeightMatrix.MatVecRows"/>):
/// bitwise what a one-token decode gives, whatever else is in the batch. Decode tokens, and tokens a preempted
/// sequence had generated and now recomputes; prompt chunks go through the faster matrix-matrix kernels.</param>
/// <param name="Logits">Whether the last row's logits are wanted (next-token sampling).</param>
public readonly record struct BatchSegment(IKvSequence Kv, int Start, int Count, bool Decode, bool Logits);
