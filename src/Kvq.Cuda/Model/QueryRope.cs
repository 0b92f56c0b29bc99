namespace Kvq.Cuda.Model;

/// <summary>Query rows an f16 append rotates in the same launch (model.cu kv_append_f16): <paramref name="Q"/> the
/// chunk's queries [n][KV heads * group][head dim] (0: none), rotated at positions <paramref name="Pos0"/> + t (a
/// graph step reads its query position from its <see cref="DecodeStep"/> instead).</summary>
internal readonly record struct QueryRope(ulong Q, int Group, long Pos0);
