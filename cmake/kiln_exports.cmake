# The linker version script of libkiln: every function include/kiln.h
# declares is global, everything else (the layers' internal kiln_* functions,
# the bundled cuBLASLt loader) local. Written at configure time from the
# header, so a function added to kiln.h is exported without another list to
# keep; tests/install checks the library's dynamic symbols against the header.
file(READ ${CMAKE_SOURCE_DIR}/include/kiln.h kiln_header)
string(REGEX MATCHALL "[ *]kiln_[a-z0-9_]+\\(" kiln_decls "${kiln_header}")
set(kiln_names "")
foreach(decl ${kiln_decls})
  string(REGEX REPLACE "^[ *](kiln_[a-z0-9_]+)\\($" "\\1" name "${decl}")
  list(APPEND kiln_names ${name})
endforeach()
list(REMOVE_DUPLICATES kiln_names)
list(SORT kiln_names)
list(JOIN kiln_names ";\n    " kiln_globals)
set(KILN_EXPORTS_MAP ${CMAKE_BINARY_DIR}/libkiln.map)
file(WRITE ${KILN_EXPORTS_MAP}.in "KILN_${PROJECT_VERSION_MAJOR} {\n  global:\n    ${kiln_globals};\n  local: *;\n};\n")
configure_file(${KILN_EXPORTS_MAP}.in ${KILN_EXPORTS_MAP} COPYONLY)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/include/kiln.h)
