/* actors/api_page.c: the page GET / serves, embedded at build time from
 * actors/web/index.html (meson runs actors/web/embed.c). Data only: must not hold logic. */
#include "actors/api.h"
#include "api_page_html.h"

const unsigned char *const exo_api_page_html = api_page_html;
const size_t exo_api_page_html_len = sizeof api_page_html - 1; /* the trailing NUL */
