#!/usr/bin/env bash
# Mutation testing of the codecs, one part at a time (the whole folder at once does not finish in a session on the
# shared 2-core machine: ~2,500 codec mutants on top of Stryker's build and its compile of the whole project).
# Each part mutates a few files of src/Kvq/Cache/Codecs and runs only the tests that check them (Stryker runs, per
# mutant, only the tests of the filter that cover it); the codec matrix only with its rows for the part's formats
# (DisplayName~NAME: xunit theory rows are separate test cases), since Stryker's initial run and its coverage run
# execute the whole filter, and the matrix's calibrated formats (nuq, low-rank) fit a profile per head dim. Reports: dev/mutation/out/Cache-Codecs-<part>/reports/.
#
#   dev/mutation/codecs.sh kvquant           # one part
#   dev/mutation/codecs.sh kvquant ggml      # several, one after the other
#   dev/mutation/codecs.sh ggml+uniform      # two parts in one run
#
# Parts:
#   kvquant   KVQuant's encoder and decoder: nuq per-token and per-channel codecs, their outlier/sparse rows,
#             token scales, channel scales, codebook, bit packing (KvQuant/Nuq*.cs less the fused attention
#             kernels NuqKernels.cs and NuqLanes.cs, see docs/testing.md), against Kvq.Tests.Cache.Codecs.KvQuant
#             less NuqFusedKernelTests and the model-driven KvOutlierCountsTests
#   ggml      q8_0, q4_0 and the block outliers (BlockOutliers.cs), with the q8_0/q4_0 encoders they call (ggml's,
#             in Tensors/Quant/QuantFormats.Quantize.cs: the f16 rounding, the scalar references and the AVX2 paths),
#             against the codec matrix, GgmlBlockTests (byte for byte against ggml's own encoders) and
#             QuantFormatsQuantizeTests
#   nuq-encoders  the two nuq encoders and block decoders only (line spans of NuqTokenCodec and NuqChannelCodec)
#             against the fast nuq unit tests
#   kvquant-core  a narrow cut of kvquant (scale, split, codebook, packing, decode helpers; the two encoders and block
#             decoders by line span) against the nuq unit tests only: what fits a session on the loaded machine
#   uniform   intB/-g64/-tok/-ch, KIVI and the packing they share
#   paging    not a codec: src/Kvq/Cache/Paging against Kvq.Tests.Cache.Paging, to share a run with the codecs
#             (dev/mutation/codecs.sh kvquant+ggml+uniform+paging: all in one run, about an hour here)
# Environment: CONCURRENCY (default 2), LEVEL (default Standard); the ignored methods (exception constructors, argument
# guards, logging) are in dev/mutation/codecs-config.json.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
codec='FullyQualifiedName~Kvq.Tests.Cache.Codecs'
# A part named a+b (e.g. ggml+uniform) is one Stryker run over both parts' files with both filters: one build and one
# compile of the project's mutants instead of two (the survivors script gives the scores per file).
pick() {
  case "$1" in
    kvquant)
      files+=" KvQuant/NuqTokenCodec.cs KvQuant/NuqChannelCodec.cs KvQuant/NuqOutlierRows.cs KvQuant/NuqCodebook.cs
             KvQuant/NuqBits.cs KvQuant/NuqDecode.cs KvQuant/NuqErrorBound.cs KvQuant/TokenOutliers.cs
             KvQuant/TokenScale.cs KvQuant/ChannelScales.cs"
      # Not NuqFusedKernelTests (the fused kernels are not mutated: 739 of the filter's 998 s of test time) nor the
      # model-driven KvOutlierCountsTests (90 s): Stryker's coverage capture runs every test of the filter once.
      filter+="|($codec.KvQuant&FullyQualifiedName!~NuqFusedKernelTests&FullyQualifiedName!~KvOutlierCountsTests)|($codec.CodecMatrixTests&DisplayName~nuq)" ;;
    kvquant-core)
      # The narrow cut of kvquant that fits a session at load 40-60: the scale, split, codebook, packing and decode
      # helpers whole, and the encoders and block decoders of the two codecs by line span (not their fused attention
      # paths, their test oracles or their error bounds), against the fast unit tests only (no codec matrix rows,
      # which fit a profile per head dim, no KvQuantAttentionTests or KvQuantSpecTests: tens of seconds each).
      files+=" KvQuant/TokenScale.cs KvQuant/TokenOutliers.cs KvQuant/NuqBits.cs KvQuant/NuqCodebook.cs KvQuant/ChannelScales.cs
             KvQuant/NuqDecode.cs KvQuant/NuqErrorBound.cs KvQuant/NuqTokenCodec.cs{153..259} KvQuant/NuqChannelCodec.cs{190..264}"
      for t in NuqTokenCodecTests NuqChannelCodecTests NuqEncodeReferenceTests NuqErrorBoundTests NuqBitsTests NuqCodebookTests TokenScaleTests; do
        filter+="|$codec.KvQuant.$t"
      done ;;
    nuq-encoders)
      # The two nuq encoders and block decoders by line span (1-based, inclusive; run.sh turns them into Stryker's
      # character spans): NuqTokenCodec's outlier-rows guard, stored scale, split, :clip search, encode and decode;
      # NuqChannelCodec's guard, normalize, encode (scalar and AVX-512) and decode. Not their fused attention paths,
      # test oracles (DecodeBlockReference) or error bounds. Against the fast nuq unit tests, as kvquant-core.
      files+=" KvQuant/NuqTokenCodec.cs{60..65}{153..259} KvQuant/NuqChannelCodec.cs{78..79}{190..264}"
      for t in NuqTokenCodecTests NuqChannelCodecTests NuqEncodeReferenceTests NuqCodecEdgeTests; do
        filter+="|$codec.KvQuant.$t"
      done ;;
    ggml)
      files+=" Q8_0Codec.cs Q4_0Codec.cs BlockOutliers.cs"
      extra+=" Tensors/Quant/QuantFormats.Quantize.cs{77..146} Tensors/Quant/QuantFormats.Quantize.cs{238..319}"
      filter+="|($codec.CodecMatrixTests&(DisplayName~q8_0|DisplayName~q4_0))|$codec.GgmlBlockTests|$codec.BlockOutliersTests|$codec.BlockOutliersEdgeTests|$codec.CopySlotTests|$codec.CodecLayoutTests|FullyQualifiedName~Kvq.Tests.Tensors.QuantFormatsQuantizeTests|FullyQualifiedName~Kvq.Tests.Tensors.QuantFormatsLayoutTests.ScaleEncodingRoundsToNearestEvenLikeHalf" ;;
    uniform)
      files+=" AsymmetricQuantizer.cs UniformTokenCodec.cs UniformChannelCodec.cs PackedCodes.cs KiviCodec.cs"
      filter+="|($codec.CodecMatrixTests&(DisplayName~int|DisplayName~kivi))|$codec.UniformEncodeReferenceTests|$codec.PackedCodesTests|$codec.CopySlotTests|$codec.CodecLayoutTests" ;;
    paging)
      # Not a codec: src/Kvq/Cache/Paging with its own tests, so that one run (one build, one compile of the
      # project's mutants) can measure the codecs and the paging together (reports in out/Cache-Codecs-...+paging/).
      extra+=" Cache/Paging/*.cs"
      filter+="|FullyQualifiedName~Kvq.Tests.Cache.Paging" ;;
    *) echo "unknown part '$1' (kvquant, kvquant-core, nuq-encoders, ggml, uniform, paging)" >&2; exit 2 ;;
  esac
}
for part in "$@"; do
  files= extra= filter=
  IFS=+ read -ra pieces <<< "$part"
  for piece in "${pieces[@]}"; do pick "$piece"; done
  filter=${filter#|}
  echo "== part $part: $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
  CONFIG="$here/codecs-config.json" CONCURRENCY=${CONCURRENCY:-2} FILES="$(echo $files)" EXTRA="$(echo $extra)" PART=$part \
    "$here/run.sh" src/Kvq/Cache/Codecs "$filter"
  echo "== part $part done: $(date -u +%FT%TZ)"
done
